fn main() {
    if let Err(e) = rill::cli::main() {
        // A reader that stopped reading (`jobctl tail … | head`) ends the
        // output; it is not an error of the command.
        if rill::cli::is_broken_pipe(&e) {
            std::process::exit(0);
        }
        eprintln!("error: {}", rill::secrets::redact(&format!("{e:#}")));
        std::process::exit(rill::cli::exit_status(&e));
    }
}
