//! The rota.v1 API from another language: a Python client generated from
//! `proto/` with grpcio-tools (`chaos-tests/python/rota_client_check.py`),
//! against a real cluster. Needs `python3` with grpcio-tools,
//! grpcio-reflection and grpcio-health-checking; without them the test is
//! skipped with a message, unless `ROTA_REQUIRE_PYTHON_GRPC=1` (set by CI),
//! where it fails.

use std::path::PathBuf;
use std::time::Duration;

use rota_chaos::{Cluster, ServerSettings};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/rota_client_check.py")
}

fn python_grpc_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, grpc_reflection, grpc_health"])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_generated_from_the_protos_works() {
    if !python_grpc_available() {
        let required = std::env::var("ROTA_REQUIRE_PYTHON_GRPC").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "ROTA_REQUIRE_PYTHON_GRPC=1 but python3 lacks grpcio-tools/grpcio-reflection/grpcio-health-checking"
        );
        eprintln!("skipped: python3 with grpcio-tools, grpcio-reflection and grpcio-health-checking is not installed");
        return;
    }
    let cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let addrs: Vec<String> = cluster.ids().iter().filter_map(|&id| cluster.addr(id).ok()).collect();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(script())
            .args(&addrs)
            .output(),
    )
    .await
    .expect("python client finishes in time")
    .expect("python3 runs");
    let report = format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        cluster.dump_logs();
    }
    assert!(output.status.success(), "{report}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("python client: OK"),
        "{report}"
    );
}
