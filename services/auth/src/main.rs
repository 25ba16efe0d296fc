fn main() -> anyhow::Result<()> {
    auth::cli::main()
}
