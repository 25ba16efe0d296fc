//! The chat service as the fault tests, the benchmark and the soak run start
//! it: its own entry point, built by cargo with this package's tests.

fn main() -> anyhow::Result<()> {
    chat::cli::main()
}
