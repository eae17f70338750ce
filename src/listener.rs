//! Accepts the gRPC server's TCP connections with two bounds the transport does not keep itself:
//! at most `--max-connections` open at once (one more is accepted and closed at once, counted,
//! so that a client sees a refusal instead of hanging in the backlog), and an accept error (no
//! descriptors left, EMFILE) is counted, logged once and retried after a growing pause, where
//! tonic's own accept loop retries at once and spins a core. Written here because neither tonic
//! nor tokio-stream's `TcpListenerStream` offers either bound.

use crate::{
    events::{AcceptFailed, ConnectionsRefused},
    self_metrics::SelfStats,
};
use futures_util::Stream;
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Default `--max-connections`: a model server opens a handful; 256 leaves room for many worker
/// processes while bounding what their streams can hold.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The first pause after an accept error, doubled up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// `--max-connections` slots: one is held by each open connection.
pub struct ConnectionSlots {
    free: Arc<Semaphore>,
    max: usize,
}

impl ConnectionSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Arc::new(Semaphore::new(max)),
            max,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.free.available_permits()
    }
}

/// One accepted connection; its slot under `--max-connections` is freed when it is dropped.
pub struct Connection {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// The connections `listener` accepts, bounded as the module says. Never yields an error: the
/// server would only skip it.
pub fn incoming(
    listener: TcpListener,
    slots: Arc<ConnectionSlots>,
    stats: Arc<SelfStats>,
) -> impl Stream<Item = io::Result<Connection>> {
    let max_connections = slots.max;
    futures_util::stream::unfold(
        (listener, slots, stats),
        move |(listener, slots, stats)| async move {
            let mut backoff = FIRST_ACCEPT_BACKOFF;
            loop {
                match listener.accept().await {
                    Ok((tcp, _)) => {
                        let Ok(slot) = slots.free.clone().try_acquire_owned() else {
                            stats.emit(&ConnectionsRefused {
                                limit: max_connections,
                            });
                            drop(tcp);
                            continue;
                        };
                        // Records are small and latency-sensitive: no Nagle buffering.
                        let _ = tcp.set_nodelay(true);
                        let connection = Connection { tcp, _slot: slot };
                        return Some((Ok(connection), (listener, slots, stats)));
                    }
                    Err(error) => {
                        stats.emit(&AcceptFailed { error: &error });
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    }
                }
            }
        },
    )
}

/// The same bounded accept loop for an HTTP server (axum): the OTLP/HTTP receiver's
/// connections count against a `--max-connections` of their own and accept errors back off as
/// the gRPC server's do.
pub struct BoundedListener {
    incoming: Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>>,
    local: std::net::SocketAddr,
}

impl BoundedListener {
    pub fn new(listener: TcpListener, slots: Arc<ConnectionSlots>, stats: Arc<SelfStats>) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        Self {
            incoming: Box::pin(incoming(listener, slots, stats)),
            local,
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        use futures_util::StreamExt;
        loop {
            // `incoming` never ends and never yields an error (it retries accepts itself).
            if let Some(Ok(connection)) = self.incoming.next().await {
                let peer = connection.tcp.peer_addr().unwrap_or(self.local);
                return (connection, peer);
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        Ok(self.local)
    }
}
