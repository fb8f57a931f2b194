//! Socket options tokio does not expose: TCP keepalive timing and half-close on a shared ref.

use std::io;
use std::os::fd::AsRawFd;

use tokio::net::TcpStream;

use crate::config::KeepaliveConfig;

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: fd is a live socket owned by the caller; value points to a c_int for its duration.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns on TCP keepalive with the configured idle/interval/count (both legs use it, so a
/// silently vanished switch or agent is noticed even when no byte flows).
pub fn set_keepalive(stream: &impl AsRawFd, ka: &KeepaliveConfig) -> io::Result<()> {
    if !ka.enabled {
        return Ok(());
    }
    let fd = stream.as_raw_fd();
    let secs = |d: std::time::Duration| d.as_secs().clamp(1, 32_767) as i32;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(ka.idle))?;
    setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        secs(ka.interval),
    )?;
    setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        ka.count.clamp(1, 127) as i32,
    )?;
    Ok(())
}

pub fn set_nodelay(socket: &impl AsRawFd) -> io::Result<()> {
    setsockopt_int(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Sends FIN on `stream` while its read side keeps working (half-close).
pub fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    // SAFETY: fd is a live socket owned by `stream` for the duration of the call.
    let rc = unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Closes with RST instead of FIN (SO_LINGER 0): used when a session is killed, so the peer
/// learns at once that the session is gone, as HAProxy does on shutdown-sessions.
pub fn set_linger_zero(stream: &TcpStream) -> io::Result<()> {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: fd is live; lg is a valid linger struct for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
