//! The binaries' edge: a failure is bad input (exit 2) or anything else
//! (exit 1), reported as one line naming the binary, as the contract fixes.

use std::process::ExitCode;

/// A failure at the binary edge: bad input exits 2, anything else 1.
#[derive(Debug)]
pub enum CliError {
    /// The user's input cannot be used (a bad flag, file, id or rules).
    Input(anyhow::Error),
    /// Anything else.
    Failure(anyhow::Error),
}

impl CliError {
    /// One line: the whole context chain, joined.
    pub fn message(&self) -> String {
        let error = match self {
            CliError::Input(error) | CliError::Failure(error) => error,
        };
        format!("{error:#}").replace('\n', " ")
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Failure(_) => 1,
        }
    }
}

/// The process's exit: 0, or the error on one line prefixed by `binary`.
pub fn finish(binary: &str, outcome: Result<(), CliError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{binary}: {}", error.message());
            ExitCode::from(error.exit_code())
        }
    }
}
