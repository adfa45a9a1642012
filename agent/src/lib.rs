//! tidemark-agent's library: empty until the streaming agent lands.
