//! The demo upstream `umbra dev` puts behind its gateway: plain HTTP on
//! loopback, answering every request with a JSON echo of the method, the
//! path it received and every header, so a user can see exactly what the
//! gateway passed on (and what it stripped).

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "service": "umbra demo upstream",
        "method": req.method().as_str(),
        "version": format!("{:?}", req.version()),
        "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// The demo TCP service: echoes every byte back, until the client closes.
pub async fn serve_tcp_echo(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let mut tcp = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let (mut r, mut w) = tcp.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            // HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(echo))
                    .await;
        });
    }
}
