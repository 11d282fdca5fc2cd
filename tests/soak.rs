//! A bounded soak (60 s) in every test run: `scripts/soak` drives keep-alive
//! load, verified echo uploads, slowloris, aborting clients and malformed
//! requests against the real master while it kills, reloads and rescales
//! workers, then checks that only a killed worker's own connections were
//! lost and that no connection, fd or process leaked. The 5-minute run is
//! `scripts/soak` itself.

use std::path::Path;
use std::process::Command;

#[test]
fn soak_under_faults_loses_nothing_and_leaks_nothing() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_http-cluster")).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/soak");
    let out = Command::new("python3")
        .arg(script)
        .args(["--duration", "60", "--seed", "7", "--bin-dir"])
        .arg(bin_dir)
        .output()
        .expect("python3 runs scripts/soak");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the soak found broken invariants:\n{report}");
    assert!(report.contains("PASSED"), "{report}");
}
