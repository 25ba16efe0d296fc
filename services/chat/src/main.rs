fn main() -> anyhow::Result<()> {
    chat::cli::main()
}
