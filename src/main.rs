fn main() {
    if let Err(e) = rill::cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(rill::cli::exit_status(&e));
    }
}
