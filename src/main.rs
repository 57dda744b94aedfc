fn main() -> anyhow::Result<()> {
    rill::cli::main()
}
