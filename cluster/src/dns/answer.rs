//! One DNS message in, one out: questions in the cluster zone (and reverse names of cluster
//! addresses) are answered from the zone snapshot, everything else is forwarded. UDP answers
//! larger than the client can take are truncated (TC set) so it retries over TCP.

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};

use super::forward::Forwarder;
use super::zone::{Lookup, Zone};

/// The largest UDP answer offered to EDNS clients (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// Without EDNS a UDP answer is at most this big (RFC 1035).
const PLAIN_UDP: usize = 512;

/// Everything answering needs.
pub struct Responder {
    /// None until the watches have listed everything once (answers are SERVFAIL till then,
    /// so a half-known zone never says NXDOMAIN for a name that exists).
    pub zone: tokio::sync::watch::Receiver<Option<Arc<Zone>>>,
    pub forwarder: Forwarder,
}

impl Responder {
    /// The answer to the message `request` that came over UDP (`tcp` false) or TCP; None when
    /// it is not worth an answer (not a query, or too short to carry an ID).
    pub async fn respond(&self, request: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let msg = match Message::from_vec(request) {
            Ok(m) => m,
            Err(_) if request.len() >= 12 && request[2] & 0x80 == 0 => {
                let id = u16::from_be_bytes([request[0], request[1]]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
            Err(_) => return None,
        };
        if msg.metadata.message_type != MessageType::Query {
            return None;
        }
        let limit = if tcp {
            usize::from(u16::MAX)
        } else if msg.edns.is_some() {
            usize::from(msg.max_payload().min(EDNS_PAYLOAD))
        } else {
            PLAIN_UDP
        };
        let mut reply = self.reply_to(&msg, request, tcp).await?;
        if reply.len() > limit
            && let Ok(parsed) = Message::from_vec(&reply)
        {
            reply = parsed.truncate().to_vec().ok()?;
        }
        Some(reply)
    }

    async fn reply_to(&self, msg: &Message, request: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let mut out = Message::response(msg.metadata.id, msg.metadata.op_code);
        out.metadata.recursion_desired = msg.metadata.recursion_desired;
        out.metadata.recursion_available = true;
        out.metadata.checking_disabled = msg.metadata.checking_disabled;
        out.add_queries(msg.queries.iter().cloned());
        if msg.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            out.set_edns(edns);
        }
        let fail = |mut out: Message, code| {
            out.metadata.response_code = code;
            out.to_vec().ok()
        };
        if msg.metadata.op_code != OpCode::Query {
            return fail(out, ResponseCode::NotImp);
        }
        let [query] = msg.queries.as_slice() else {
            return fail(out, ResponseCode::FormErr);
        };
        let Some(zone) = self.zone.borrow().clone() else {
            return fail(out, ResponseCode::ServFail);
        };
        let class_ok = matches!(query.query_class(), DNSClass::IN | DNSClass::ANY);
        let lookup = if class_ok {
            zone.lookup(query.name(), query.query_type())
        } else {
            Lookup::NotOurs
        };
        out.metadata.authoritative = !matches!(lookup, Lookup::NotOurs);
        match lookup {
            Lookup::NotOurs => {
                return match self.forwarder.forward(request, tcp).await {
                    Ok(answer) => Some(answer),
                    Err(e) => {
                        tracing::debug!(
                            "cluster DNS: forwarding {} {}: {e:#}",
                            query.name(),
                            query.query_type()
                        );
                        fail(out, ResponseCode::ServFail)
                    }
                };
            }
            Lookup::Answer(answers, additional) => {
                out.add_answers(answers);
                out.add_additionals(additional);
            }
            Lookup::Alias(cname, target) => {
                out.add_answer(*cname);
                out.add_answers(self.chase(&zone, &target, query.query_type()).await);
            }
            Lookup::NoData => {
                out.add_authority(zone.soa());
            }
            Lookup::NxDomain => {
                out.metadata.response_code = ResponseCode::NXDomain;
                out.add_authority(zone.soa());
            }
        }
        out.to_vec().ok()
    }

    /// The records of an ExternalName's target: from the zone when it is a cluster name,
    /// else from the upstreams (none when they fail: the CNAME alone still answers).
    async fn chase(
        &self,
        zone: &Zone,
        target: &hickory_proto::rr::Name,
        qtype: RecordType,
    ) -> Vec<Record> {
        match zone.lookup(target, qtype) {
            Lookup::Answer(a, _) => return a,
            Lookup::NotOurs => {}
            _ => return Vec::new(),
        }
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(target.clone(), qtype));
        let Ok(bytes) = q.to_vec() else {
            return Vec::new();
        };
        match self.forwarder.forward(&bytes, false).await {
            Ok(answer) => Message::from_vec(&answer)
                .map(|m| m.answers)
                .unwrap_or_default(),
            Err(e) => {
                tracing::debug!("cluster DNS: resolving {target}: {e:#}");
                Vec::new()
            }
        }
    }
}
