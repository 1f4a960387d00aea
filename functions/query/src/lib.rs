//! The query Lambda: API Gateway (REST proxy) `GET` routes -> the read models the processor
//! maintains (current views, lookups by rider, driver and status, per-entity history).

pub mod handler;
pub mod params;
pub mod routes;

pub use handler::QueryApi;
pub use routes::routes;
