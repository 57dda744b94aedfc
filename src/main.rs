fn main() {
    // First of all, so that OpenSSL never registers its cleanup at exit:
    // that cleanup frees what librdkafka's and the runtimes' threads,
    // still winding down while the process exits, are using, and the
    // process died of SIGSEGV after its job had stopped cleanly.
    openssl::init();
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
