//! Time per message of the serde path and of `wire::hot`, both ways, for the messages of one
//! GET and one PUT (a 16-byte key, a 100-byte value): what each side of a connection spends
//! encoding and decoding, without the rest of a request. Rounds alternate the two paths, so
//! a noisy machine slows both alike. `cargo run --release -p ampstore-common --example hot_codec`
use std::hint::black_box;
use std::time::Instant;

use ampstore_common::frame::{decode_body, encode_frame};
use ampstore_common::ids::{RequestId, Seq};
use ampstore_common::key::{Key, Version};
use ampstore_common::protocol::{Op, Reply, Request, RequestRef, Response, Versioned, WriteId};
use ampstore_common::wire::hot;

const MESSAGES: u32 = 200_000;
const ROUNDS: usize = 5;

/// Nanoseconds per call of `f`, the best of `ROUNDS` (the least disturbed).
fn time(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..MESSAGES {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(MESSAGES)
}

fn main() {
    let key = Key::from("bench:0000012345");
    let version = Version { seq: Seq(1_234_567), index: 3 };
    let cases: Vec<(&str, Request, Response)> = vec![
        (
            "get",
            Request { id: RequestId(987_654), deadline_ms: Some(5000), op: Op::Get { key: key.clone() } },
            Response {
                id: RequestId(987_654),
                result: Ok(Reply::Value(Some(Versioned { value: vec![7; 100], version }))),
            },
        ),
        (
            "put",
            Request {
                id: RequestId(987_654),
                deadline_ms: Some(5000),
                op: Op::Put { key, value: vec![7; 100], write_id: Some(WriteId::new(u64::MAX / 3, 77_777)) },
            },
            Response { id: RequestId(987_654), result: Ok(Reply::Written { version }) },
        ),
    ];
    println!("| message | path | encode request ns | decode request ns | encode response ns | decode response ns |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, req, resp) in &cases {
        let req_ref = RequestRef { id: req.id, deadline_ms: req.deadline_ms, op: &req.op };
        let mut buf = Vec::with_capacity(4096);
        encode_frame(req, &mut buf).unwrap();
        let req_body = buf[4..].to_vec();
        buf.clear();
        encode_frame(resp, &mut buf).unwrap();
        let resp_body = buf[4..].to_vec();
        let mut best = [[f64::MAX; 4]; 2];
        for _ in 0..ROUNDS {
            for (path, row) in best.iter_mut().enumerate() {
                let fast = path == 1;
                let t = [
                    time(&mut || {
                        buf.clear();
                        if fast {
                            hot::encode_request(black_box(&req_ref), &mut buf)
                        } else {
                            encode_frame(black_box(&req_ref), &mut buf)
                        }
                        .unwrap();
                    }),
                    time(&mut || {
                        let r = if fast {
                            hot::decode_request(black_box(&req_body))
                        } else {
                            decode_body::<Request>(black_box(&req_body))
                        };
                        black_box(r.unwrap());
                    }),
                    time(&mut || {
                        buf.clear();
                        if fast {
                            hot::encode_response(black_box(resp), &mut buf)
                        } else {
                            encode_frame(black_box(resp), &mut buf)
                        }
                        .unwrap();
                    }),
                    time(&mut || {
                        let r = if fast {
                            hot::decode_response(black_box(&resp_body))
                        } else {
                            decode_body::<Response>(black_box(&resp_body))
                        };
                        black_box(r.unwrap());
                    }),
                ];
                for (b, t) in row.iter_mut().zip(t) {
                    *b = b.min(t);
                }
            }
        }
        for (path, row) in best.iter().enumerate() {
            let label = if path == 1 { "wire::hot" } else { "serde" };
            println!("| {name} | {label} | {:.0} | {:.0} | {:.0} | {:.0} |", row[0], row[1], row[2], row[3]);
        }
    }
}
