//! The UDP socket a dark gateway or controller takes knocks on.

use std::net::{SocketAddr, UdpSocket};

/// Receive buffer asked for: a valid knock that arrives during a flood of
/// garbage is lost only if the kernel's queue overflows before the
/// listener drains it. The kernel caps it at `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;

/// Binds `addr` for knocks: non-blocking (for tokio), with a large
/// receive buffer where the kernel allows it.
pub fn knock_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!(error = %e, "knock socket: receive buffer left at the default");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
