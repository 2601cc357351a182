//! Server accepts connections for the router with the bounds axum's `serve` lacks: a
//! header read timeout (a client trickling its headers is cut off; with TLS the handshake
//! has the same time) and a limit on concurrent connections (when it is reached, new
//! connections wait in the kernel's backlog). It serves HTTP/1.1 in plain text, and with
//! TLS HTTP/1.1 or h2 as ALPN chose. It drains open connections on shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tower::{ServiceExt as _, util::Oneshot};

use super::tls::{ClientCert, Tls};

/// Limits are the connection-level bounds of the HTTP server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// H2_KEEP_ALIVE is how often an idle h2 connection is pinged; a peer that does not
/// answer within the same time is gone, and its connection is closed.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// H2_MAX_STREAMS bounds the requests in flight on one h2 connection.
const H2_MAX_STREAMS: u32 = 128;

/// Protocols are the connection builders, shared by every connection.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

/// serve accepts connections until `stop` completes, then waits for the open ones to
/// finish. With `tls` every connection is TLS; without, plain HTTP/1.1.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    stop: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let protocols = Arc::new(Protocols::new(limits.header_read_timeout));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let conn = Conn {
            router: router.clone(),
            protocols: Arc::clone(&protocols),
            watcher: graceful.watcher(),
            peer,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => conn.serve_http1(stream, None).await,
                Some(tls) => conn.serve_tls(&tls, stream).await,
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

impl Protocols {
    /// new sets up both protocols: HTTP/1.1 with `header_read_timeout`, HTTP/2 with its
    /// keep-alive and stream limits.
    fn new(header_read_timeout: Duration) -> Protocols {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_KEEP_ALIVE)
            .max_concurrent_streams(H2_MAX_STREAMS);
        Protocols {
            http1,
            http2,
            header_read_timeout,
        }
    }
}

/// Conn is one accepted connection, until it is served.
struct Conn {
    router: Router,
    protocols: Arc<Protocols>,
    /// watcher ties the connection to the graceful shutdown, also when the shutdown
    /// began during its TLS handshake.
    watcher: Watcher,
    peer: SocketAddr,
}

impl Conn {
    async fn serve_tls(self, tls: &Tls, stream: TcpStream) {
        let accept = tls.acceptor().accept(stream);
        let stream = match tokio::time::timeout(self.protocols.header_read_timeout, accept).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                // A client certificate the CA did not issue ends here too.
                tracing::info!(peer = %self.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                return;
            }
        };
        let session = stream.get_ref().1;
        let h2 = session.alpn_protocol() == Some(b"h2");
        let cert = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(ClientCert::of);
        if h2 {
            self.serve_http2(stream, cert).await;
        } else {
            self.serve_http1(stream, cert).await;
        }
    }

    async fn serve_http1<I>(self, io: I, cert: Option<ClientCert>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service(self.router, self.peer, cert);
        let conn = self
            .protocols
            .http1
            .serve_connection(TokioIo::new(io), service);
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!(peer = %self.peer, error = %e, "connection closed with an error");
        }
    }

    async fn serve_http2<I>(self, io: I, cert: Option<ClientCert>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service(self.router, self.peer, cert);
        let conn = self
            .protocols
            .http2
            .serve_connection(TokioIo::new(io), service);
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!(peer = %self.peer, error = %e, "connection closed with an error");
        }
    }
}

/// service hands each request of one connection to the router, with the peer's address
/// and verified client certificate as extensions.
fn service(
    router: Router,
    peer: SocketAddr,
    cert: Option<ClientCert>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = Oneshot<Router, hyper::Request<axum::body::Body>>,
> + Send
+ 'static {
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        if let Some(cert) = &cert {
            req.extensions_mut().insert(cert.clone());
        }
        router.clone().oneshot(req.map(axum::body::Body::new))
    })
}
