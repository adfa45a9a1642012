//! The source database: how to reach it (libpq connection parameters).

pub mod conninfo;
