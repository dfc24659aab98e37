//! The `baton` binary: parse the command line, start logging, run, map the outcome to an exit
//! code. Everything else lives in the library.

use clap::Parser;

/// mimalloc instead of glibc's malloc: a profile of the worker at 1024 jobs in flight showed
/// a sixth of its CPU in glibc's malloc and free (arena lock waits included); mimalloc's
/// thread-local free lists make that cheap, and it gives freed pages back to the system after
/// a short delay, so a worker's memory goes back down once a burst of large payloads is done.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = baton::cli::Cli::parse();
    baton::cli::init_logging(cli.log_json, &cli.command);
    baton::cli::raise_nofile_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(baton::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
