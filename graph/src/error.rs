//! Errors found in a pipeline file before anything runs. Each one names where to look (file, line,
//! column) and which stage, so a user fixes the YAML without reading engine code.

use std::fmt;
use std::path::PathBuf;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: PathBuf,
    /// 1-based; 0 when the position is unknown.
    pub line: u64,
    pub column: u64,
    /// The stage the problem belongs to, when it belongs to one.
    pub stage: Option<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if let Some(stage) = &self.stage {
            write!(f, ": stage `{stage}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one pipeline file; validation reports them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{} in the pipeline file:", if n == 1 { "" } else { "s" })?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}
