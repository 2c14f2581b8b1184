//! Printing for the examples: a closed pipe (`quickstart | head -2`) stops
//! the output, not the program, so an example still finishes its work and
//! cleans up after itself instead of panicking.

#![allow(dead_code)]

/// Writes one line to standard output; a write that fails (the reader went
/// away) is dropped.
pub fn line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
}

/// `println!`, without the panic on a closed pipe.
macro_rules! println {
    ($($arg:tt)*) => {
        say::line(format_args!($($arg)*))
    };
}

/// Standard output for the examples' demos: once the reader has gone away
/// (a closed pipe), writes are dropped instead of failing, so the demo
/// still finishes and cleans up.
pub struct Stdout;

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::io::stdout().write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match std::io::stdout().flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}
