//! The init <-> machined control channel: one line (`reboot`, `poweroff`, `halt`) over the Unix
//! socket `/run/ros/init.sock`; init answers `ok`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const INIT_SOCKET: &str = "/run/ros/init.sock";

/// Sends `word` to init and waits for its `ok`.
pub fn request(socket: &Path, word: &str) -> Result<(), String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{word}\n").as_bytes())
        .map_err(|e| format!("send {word}: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| format!("read reply: {e}"))?;
    if reply.trim() == "ok" {
        Ok(())
    } else {
        Err(format!("init answered {:?} to {word}", reply.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn sends_one_line_and_reads_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            (&stream).write_all(b"ok\n").unwrap();
            line
        });
        request(&path, "reboot").unwrap();
        assert_eq!(server.join().unwrap(), "reboot\n");
    }
}
