//! `scripts/bench` runs the servers of each round in a balanced order, so
//! that what one run leaves for the next (TIME_WAIT sockets, a cooling
//! core) is spread over every server instead of falling on the same
//! neighbours every round, as a rotated ring did. The ratios in the README
//! rest on that; it is checked here on the script's own `round_order`.

use std::path::Path;
use std::process::Command;

/// Every property of the design for 2 to 8 servers, checked in Python
/// against the script's function; prints one line per failure.
const CHECK: &str = r#"
import importlib.machinery, importlib.util, itertools, sys
loader = importlib.machinery.SourceFileLoader("bench", sys.argv[1])
spec = importlib.util.spec_from_loader("bench", loader)
bench = importlib.util.module_from_spec(spec)
sys.path.insert(0, sys.argv[2])
loader.exec_module(bench)
for n in range(2, 9):
    names = [f"s{i}" for i in range(n)]
    period = n if n % 2 == 0 else 2 * n
    rows = [bench.round_order(names, r) for r in range(period)]
    for r, row in enumerate(rows):
        if sorted(row) != names:
            print(f"n={n} round {r}: not a permutation: {row}")
    leaders = [row[0] for row in rows]
    for name in names:
        if leaders.count(name) != period // n:
            print(f"n={n}: {name} leads {leaders.count(name)} of {period} rounds")
    pairs = [(a, b) for row in rows for a, b in zip(row, row[1:])]
    for a, b in itertools.permutations(names, 2):
        if pairs.count((a, b)) != period // n:
            print(f"n={n}: {b} follows {a} {pairs.count((a, b))} times in {period} rounds")
    # The design repeats: round r and round r + period are the same.
    if bench.round_order(names, period + 3) != rows[3 % period]:
        print(f"n={n}: round {period + 3} is not round {3 % period}")
print("checked")
"#;

#[test]
fn each_server_leads_once_and_follows_every_other_equally_often() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let out = Command::new("python3")
        .args(["-c", CHECK])
        .arg(scripts.join("bench"))
        .arg(&scripts)
        // Loading the script must not leave a compiled copy in scripts/.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python3 failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "checked", "the order is unbalanced:\n{stdout}");
}
