//! Route requests sent many to a `sendmsg`, as the kernel takes them.
//!
//! The kernel handles every netlink message in a datagram in turn, inside the `sendmsg` call
//! that carries it, and keeps going after one fails. So a batch is one datagram of up to
//! [`MAX_MESSAGES`] requests: only the last asks for an acknowledgement, and a failed request
//! is answered with its own error (sequence number and errno). When the last request's answer
//! arrives, every request without an error answer has been applied. One system call per
//! batch instead of one per route, and one reply per batch plus one per failure.
//!
//! The socket caps acknowledgements (`NETLINK_CAP_ACK`), so an error answer carries only the
//! request's header, and its receive buffer holds the error answers of a whole batch.

use std::io;
use std::time::Duration;

use rtnetlink::packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols};

/// Requests per datagram. Their error answers (a few hundred bytes of socket memory each)
/// must fit in the receive buffer together.
pub const MAX_MESSAGES: usize = 128;
/// Bytes per datagram; far below the socket's send buffer.
const MAX_BYTES: usize = 48 * 1024;
/// Asked for; the kernel caps it at `net.core.rmem_max` (the machine's own setting, left
/// alone), which is enough for [`MAX_MESSAGES`] error answers.
const RECEIVE_BUFFER: usize = 1 << 20;
/// The kernel answers within the `sendmsg`; this only guards against a lost answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const NLMSG_ERROR: u16 = 2;

/// One route request.
pub enum Request {
    /// `RTM_NEWROUTE`: replacing our route, or creating one that must not replace anybody's.
    New { msg: RouteMessage, replace: bool },
    /// `RTM_DELROUTE`.
    Delete(RouteMessage),
}

/// Why a request did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the kernel refused it: {}", io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    #[error("the netlink socket failed: {0}")]
    Socket(#[source] io::Error),
    #[error("its answer was lost (the socket overflowed or failed); the table is read again")]
    Unanswered,
}

impl Refusal {
    pub fn errno(&self) -> Option<i32> {
        match self {
            Refusal::Kernel { errno } => Some(*errno),
            Refusal::Socket(_) | Refusal::Unanswered => None,
        }
    }
}

/// What became of a batch.
pub struct Outcome {
    /// One per request, in order.
    pub results: Vec<Result<(), Refusal>>,
    /// Answers were lost (the socket overflowed or failed, or the kernel did not answer in
    /// time): the requests without an answer are [`Refusal::Unanswered`], applied or not.
    /// The caller should compare with a dump.
    pub answers_lost: bool,
}

/// A netlink socket of our own for route writes.
pub struct RouteSocket {
    socket: TokioSocket,
    seq: u32,
    out: Vec<u8>,
    answer: Vec<u8>,
}

impl RouteSocket {
    /// Opens the socket in the network namespace of the calling thread.
    pub fn open() -> io::Result<RouteSocket> {
        let mut socket = TokioSocket::new(protocols::NETLINK_ROUTE)?;
        let s = socket.socket_mut();
        s.bind_auto()?;
        s.connect(&SocketAddr::new(0, 0))?;
        // Both best effort: without the cap an error answer carries the whole request (a
        // kernel before 4.2), and the default buffer still holds a batch's answers.
        let _ = s.set_cap_ack(true);
        let _ = s.set_rx_buf_sz(RECEIVE_BUFFER);
        Ok(RouteSocket {
            socket,
            seq: 0,
            out: Vec::with_capacity(MAX_BYTES + 4096),
            answer: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends `requests`, [`MAX_MESSAGES`] to a datagram, and waits for the kernel's answers
    /// to each datagram before the next.
    pub async fn apply(&mut self, requests: Vec<Request>) -> Outcome {
        let mut results = Vec::with_capacity(requests.len());
        let mut answers_lost = false;
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let first = self.seq.wrapping_add(1);
            let mut count = 0usize;
            let mut last_at = 0;
            self.out.clear();
            while count < MAX_MESSAGES && self.out.len() < MAX_BYTES {
                let Some(request) = requests.next() else {
                    break;
                };
                self.seq = self.seq.wrapping_add(1);
                last_at = self.out.len();
                encode(&mut self.out, request, self.seq);
                count += 1;
            }
            // Only the last request asks for the acknowledgement that ends the wait.
            ask_for_ack(&mut self.out[last_at..]);
            let (batch, lost) = self.exchange(first, count).await;
            answers_lost |= lost;
            results.extend(batch);
        }
        Outcome {
            results,
            answers_lost,
        }
    }

    /// Sends the datagram in `out` (requests `first..first+count`) and collects the answers.
    async fn exchange(&mut self, first: u32, count: usize) -> (Vec<Result<(), Refusal>>, bool) {
        let mut results: Vec<Result<(), Refusal>> = (0..count).map(|_| Ok(())).collect();
        if let Err(e) = self.socket.send(&self.out).await {
            let kind = e.kind();
            for r in &mut results {
                *r = Err(Refusal::Socket(io::Error::new(kind, e.to_string())));
            }
            return (results, false);
        }
        let last = first.wrapping_add(count as u32).wrapping_sub(1);
        let mut answered = vec![false; count];
        let wait = async {
            loop {
                self.answer.clear();
                if self.socket.recv(&mut self.answer).await.is_err() {
                    return false;
                }
                // Answers read before any error: nothing was dropped (the socket reports an
                // overflow before the answers that follow it), so silence means success.
                if take_answers(&self.answer, first, last, &mut results, &mut answered, true) {
                    return true;
                }
            }
        };
        let complete = tokio::time::timeout(ANSWER_TIMEOUT, wait)
            .await
            .unwrap_or(false);
        if complete {
            return (results, false);
        }
        // An overflow (ENOBUFS) leaves the socket dropping every answer until its queue
        // has been read empty: read what is there, so the next batch is answered.
        loop {
            self.answer.clear();
            if self.socket.socket_ref().recv(&mut self.answer, 0).is_err() {
                break;
            }
            take_answers(
                &self.answer,
                first,
                last,
                &mut results,
                &mut answered,
                false,
            );
        }
        for (r, answered) in results.iter_mut().zip(answered) {
            if !answered {
                *r = Err(Refusal::Unanswered);
            }
        }
        (results, true)
    }
}

/// Records the answers in `datagram` to requests `first..=last`; true once the last one's
/// answer (which ends the batch) is among them. With `trust_silence`, that answer also
/// settles every request before it that had none.
fn take_answers(
    datagram: &[u8],
    first: u32,
    last: u32,
    results: &mut [Result<(), Refusal>],
    answered: &mut [bool],
    trust_silence: bool,
) -> bool {
    let mut done = false;
    for (seq, errno) in answers(datagram) {
        let index = seq.wrapping_sub(first) as usize;
        if index >= results.len() {
            continue;
        }
        answered[index] = true;
        if let Some(errno) = errno {
            results[index] = Err(Refusal::Kernel { errno });
        }
        if seq == last {
            done = true;
            if trust_silence {
                // The kernel answers in order: a request before the last one without an
                // answer was applied.
                answered.fill(true);
            }
        }
    }
    done
}

fn encode(out: &mut Vec<u8>, request: Request, seq: u32) {
    let (payload, flags) = match request {
        Request::New { msg, replace } => (
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL },
        ),
        Request::Delete(msg) => (RouteNetlinkMessage::DelRoute(msg), 0),
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    message.finalize();
    let start = out.len();
    out.resize(start + message.buffer_len(), 0);
    message.serialize(&mut out[start..]);
}

/// Sets `NLM_F_ACK` on the message at the start of `message`.
fn ask_for_ack(message: &mut [u8]) {
    if let Ok(mut msg) = NetlinkBuffer::new_checked(message) {
        let flags = msg.flags() | NLM_F_ACK;
        msg.set_flags(flags);
    }
}

/// The `(sequence number, errno if refused)` of every answer in a datagram.
fn answers(datagram: &[u8]) -> Vec<(u32, Option<i32>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let Ok(msg) = NetlinkBuffer::new_checked(&datagram[offset..]) else {
            break;
        };
        let len = (msg.length() as usize).max(16);
        if msg.message_type() == NLMSG_ERROR
            && let Ok(err) = ErrorBuffer::new_checked(msg.payload())
        {
            out.push((msg.sequence_number(), err.code().map(|c| c.get().abs())));
        }
        offset += len.next_multiple_of(4);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::RouteMessageBuilder;
    use std::net::Ipv4Addr;

    fn route(n: u8) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(10, n, 0, 0), 24)
            .build()
    }

    #[test]
    fn only_the_last_request_of_a_datagram_asks_for_an_acknowledgement() {
        let mut out = Vec::new();
        let mut last_at = 0;
        for seq in 1..=3 {
            let request = Request::New {
                msg: route(seq as u8),
                replace: seq == 2,
            };
            last_at = out.len();
            encode(&mut out, request, seq);
        }
        ask_for_ack(&mut out[last_at..]);
        let mut offset = 0;
        let mut seen = Vec::new();
        while offset < out.len() {
            let msg = NetlinkBuffer::new_checked(&out[offset..]).expect("message");
            seen.push((msg.sequence_number(), msg.flags()));
            offset += (msg.length() as usize).next_multiple_of(4);
        }
        let create = NLM_F_REQUEST | NLM_F_CREATE;
        assert_eq!(
            seen,
            vec![
                (1, create | NLM_F_EXCL),
                (2, create | NLM_F_REPLACE),
                (3, create | NLM_F_EXCL | NLM_F_ACK),
            ]
        );
    }

    #[test]
    fn answers_are_read_by_sequence_number_with_their_errno() {
        // Two capped answers in one buffer: an error (-ESRCH) for 7, an acknowledgement for 8.
        let mut datagram = Vec::new();
        for (seq, code) in [(7u32, -3i32), (8, 0)] {
            let mut msg = vec![0u8; 36];
            msg[0..4].copy_from_slice(&36u32.to_ne_bytes());
            msg[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            msg[8..12].copy_from_slice(&seq.to_ne_bytes());
            msg[16..20].copy_from_slice(&code.to_ne_bytes());
            datagram.extend(msg);
        }
        assert_eq!(answers(&datagram), vec![(7, Some(3)), (8, None)]);
        assert!(answers(&datagram[..10]).is_empty());

        // Requests 6, 7, 8: the last one's answer settles 6 only when nothing was dropped.
        for trust in [true, false] {
            let mut results: Vec<Result<(), Refusal>> = (0..3).map(|_| Ok(())).collect();
            let mut answered = vec![false; 3];
            assert!(take_answers(
                &datagram,
                6,
                8,
                &mut results,
                &mut answered,
                trust
            ));
            assert!(matches!(results[1], Err(Refusal::Kernel { errno: 3 })));
            assert!(results[0].is_ok() && results[2].is_ok());
            assert_eq!(answered, vec![trust, true, true]);
        }
    }
}
