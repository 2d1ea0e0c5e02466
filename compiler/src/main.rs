fn main() -> std::process::ExitCode {
    netc::cli::main()
}
