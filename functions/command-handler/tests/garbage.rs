//! Whatever bytes arrive, the handler answers with a 4xx problem (never a 5xx) and a
//! refused request writes nothing. Unit level: in-memory ports, many random inputs.

use command_handler::routes::routes;
use command_handler::CommandApi;
use proptest::prelude::*;
use timeline_core::ports::SystemClock;
use timeline_engine::memory::{MemoryLog, MemoryStore};
use timeline_testkit::api_request;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bodies_never_cause_a_server_error(
        route in 0..routes().len(),
        id in "[a-z0-9.]{0,4}",
        body in prop_oneof![
            any::<String>(),
            "\\{(\"[a-z_]{1,12}\": ?(-?[0-9]{1,25}|\"[^\"]{0,10}\"|null|true|\\[\\]|\\{\\}),? ?){0,4}\\}",
        ],
    ) {
        let store = MemoryStore::default();
        let log = MemoryLog::default();
        let api = CommandApi::new(store.clone(), log.clone(), SystemClock);
        let path = routes()[route].0.replace("{id}", &id);
        let response = runtime().block_on(api.handle(api_request(
            "POST", &path, &[("Content-Type", "application/json")], Some(&body),
        )));
        let status = response.status().as_u16();
        prop_assert!(status < 500, "{path} {body:?} -> {status}");
        if status >= 400 {
            prop_assert_eq!(response.headers()["content-type"].to_str().unwrap(), "application/problem+json");
            prop_assert!(log.records().is_empty());
        }
    }
}
