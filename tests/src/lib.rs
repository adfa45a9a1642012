//! The end-to-end harness every tidemark test uses: throwaway PostgreSQL 15
//! clusters and a single-node Garage S3 server, started on loopback with
//! free ports and private directories, and stopped and removed when their
//! handle drops, also when a test fails or panics. Processes are also tied
//! to the test thread that started them (`PR_SET_PDEATHSIG`), so a killed
//! test run leaves no server behind.

pub mod agent;
mod garage;
mod postgres;
mod process;
pub mod reference;
pub mod tls;

pub use garage::Garage;
pub use postgres::PgCluster;
pub use process::HarnessError;

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
