//! Prompt templates published as endpoints: a versioned registry loaded from a directory of TOML
//! files, validation of the caller's variables, sandboxed rendering into a chat completion request,
//! and reload without restart.
//!
//! ```text
//! prompts/*.toml --PromptRegistry::load--> PromptRegistry --get(name, version)--> &Prompt
//!                                                            Prompt::render(variables) --> ChatCompletionRequest
//! PromptWatcher: current() -> Arc<PromptRegistry>, swapped whole when the directory changes and loads.
//! ```
//!
//! Problems with the files are found at load, each as `file:line: message`: TOML errors, unknown keys,
//! templates that do not parse, templates using undeclared variables, bad defaults, duplicate
//! versions. Problems with a request's variables are [`RenderError`]s naming the variable.
//!
//! The crate knows nothing of HTTP: the server maps [`RenderError`] to a 400 and sends the rendered
//! request down the chat completion path; the binary checks prompts' models against its configuration
//! through [`PromptRegistry::check_models`] or [`PromptWatcher::with_model_check`].

mod error;
mod file;
mod lifecycle;
mod prompt;
mod registry;
mod watch;

pub use error::{LoadError, Problem, RenderError};
pub use lifecycle::{Access, Lifecycle, Replacement, Status};
pub use prompt::{FUEL_PER_MESSAGE, MAX_RENDERED_BYTES, MessageTemplate, Prompt, VarType, Variable};
pub use registry::{PromptRegistry, PromptSummary};
pub use watch::PromptWatcher;

#[cfg(test)]
mod tests;
