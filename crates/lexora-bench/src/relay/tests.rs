use std::io::Read;
use std::net::{Shutdown, TcpListener as StdListener, TcpStream as StdStream};
use std::thread;

use super::*;

/// A relay that failed to pass an end of stream on makes a read time out
/// rather than hang the test.
const LIMIT: Duration = Duration::from_secs(10);

/// A relay on a free port in front of `upstream`, on a runtime of its own.
fn relay(upstream: SocketAddr) -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            serve(TcpListener::from_std(listener).expect("listener"), upstream).await;
        });
    });
    address
}

#[test]
fn relays_both_ways_and_passes_half_closes_on() {
    // The upstream reads the whole request (until the client's half-close
    // arrives as end of stream), then answers with it reversed and closes.
    let upstream = StdListener::bind("127.0.0.1:0").expect("bind");
    let upstream_address = upstream.local_addr().expect("address");
    let engine = thread::spawn(move || {
        let (mut socket, _) = upstream.accept().expect("accept");
        socket.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut request = Vec::new();
        socket.read_to_end(&mut request).expect("read");
        request.reverse();
        socket.write_all(&request).expect("write");
    });
    let mut client = StdStream::connect(relay(upstream_address)).expect("connect");
    client.set_read_timeout(Some(LIMIT)).expect("timeout");
    // More than one buffer's worth, so it crosses in several reads.
    let request: Vec<u8> = (0..BUFFER * 3 + 7).map(|i| (i % 251) as u8).collect();
    client.write_all(&request).expect("write");
    client.shutdown(Shutdown::Write).expect("half-close");
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .expect("read to the relay's end of stream");
    engine.join().expect("engine");
    let mut expected = request;
    expected.reverse();
    assert_eq!(answer.len(), expected.len());
    assert!(answer == expected, "the answer arrived changed");
}

#[test]
fn a_refused_upstream_closes_the_client() {
    // A port nobody listens on: bound, then given up.
    let closed = StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address");
    let mut client = StdStream::connect(relay(closed)).expect("connect");
    client.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .expect("end of stream, not a hang");
    assert!(answer.is_empty());
}

#[test]
fn reads_to_as_host_port_or_url() {
    assert_eq!(
        upstream("http://127.0.0.1:8001/").expect("url"),
        "127.0.0.1:8001".parse::<SocketAddr>().expect("address")
    );
    assert_eq!(upstream("127.0.0.1:9").expect("host:port").port(), 9);
    assert!(upstream("127.0.0.1").is_err(), "no port");
}
