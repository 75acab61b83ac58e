//! The `sessionkit` command. Everything is in the library's [`sessionkit_cli::main`].

fn main() -> std::process::ExitCode {
    sessionkit_cli::main()
}
