//! Step prompt templates (`system`, `user`) and `review_when` expressions, written in Jinja and
//! compiled with minijinja when the config loads, so a syntax error is reported with its key
//! and line before a worker starts. Undefined values are errors, not empty strings: a template
//! that references something a job lacks fails that job with `template_error`.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use super::error::Resolver;

/// The template environment every step's templates are compiled into.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env
}

/// Compiles `source` as template `name` into `env`; a syntax error is reported at `path`, on
/// the line of the key (`offset` in the TOML source) plus the template's own line.
pub fn add(
    env: &mut Environment<'static>,
    name: &str,
    source: &toml::Spanned<String>,
    path: &str,
    r: &mut Resolver<'_>,
) {
    if let Err(e) = env.add_template_owned(name.to_string(), source.get_ref().clone()) {
        r.err_at(path, source.span().start, describe(&e));
    }
}

/// Checks that `source` is a valid expression; an error is reported at `path`.
pub fn check_expression(
    env: &Environment<'static>,
    source: &toml::Spanned<String>,
    path: &str,
    r: &mut Resolver<'_>,
) {
    if let Err(e) = env.compile_expression(source.get_ref()) {
        r.err_at(path, source.span().start, describe(&e));
    }
}

/// A minijinja error in a user's words: what, and where inside the template.
pub fn describe(e: &minijinja::Error) -> String {
    let what = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    match e.line() {
        Some(l) => format!("{what} (template line {l})"),
        None => what,
    }
}
