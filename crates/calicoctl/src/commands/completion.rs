//! `calicoctl completion bash|zsh|fish`: a shell completion script for every command and
//! flag, generated from the same definitions that parse them (clap_complete).

use clap::CommandFactory;
use clap_complete::Shell;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// The script for a shell.
pub fn script<C: CommandFactory>(args: &Args) -> String {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = C::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "calicoctl", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
