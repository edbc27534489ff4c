//! The AFL++ entry point: `sluice-fuzz-afl <target>` runs that target's
//! harness in AFL++'s persistent mode. Built and started by `fuzz/run`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = sluice_fuzz::target(&name) else {
        let names: Vec<&str> = sluice_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!(
            "usage: sluice-fuzz-afl <target>; targets: {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    afl::fuzz!(|input: &[u8]| {
        target.run(input);
    });
}
