//! The simulated vendor as an in-process provider.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use sluice_providers::{
    BoxFuture, ChatCall, ChatProvider, ChatReply, EventStream, ProviderError, RateLimitSnapshot, ReplyBody,
    StreamEvent, TimeoutPhase, Timeouts,
};

use crate::{SimFrame, SimRejection, Simulator};

/// Serves `kind = "simulated"` providers without a network hop.
#[derive(Debug, Clone)]
pub struct SimulatedAdapter {
    sim: Arc<Simulator>,
    timeouts: Timeouts,
}

impl SimulatedAdapter {
    /// An adapter answering from `sim`, bounded by the same timeouts as a networked upstream.
    pub fn new(sim: Arc<Simulator>, timeouts: Timeouts) -> Self {
        Self { sim, timeouts }
    }

    /// The simulator behind the adapter.
    pub fn simulator(&self) -> &Arc<Simulator> {
        &self.sim
    }
}

impl ChatProvider for SimulatedAdapter {
    fn chat<'a>(&'a self, call: ChatCall<'a>) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        Box::pin(async move {
            let first_byte = self.timeouts.first_byte;
            tokio::time::timeout(first_byte, crate::before_answer(&self.sim))
                .await
                .map_err(|_| ProviderError::Timeout {
                    phase: TimeoutPhase::FirstByte,
                    after: first_byte,
                })?;
            let answer = match self.sim.admit(call.key.secret(), call.request) {
                Ok(answer) => answer,
                Err(SimRejection::RateLimited { limit, retry_after, .. }) => {
                    return Err(ProviderError::RateLimited {
                        retry_after: Some(retry_after),
                        message: format!("simulated vendor: rate limit reached for {limit}"),
                    });
                }
                Err(SimRejection::ServerError) => {
                    return Err(ProviderError::Server {
                        status: 500,
                        message: "simulated vendor: drawn server error".to_owned(),
                    });
                }
            };
            let limits = RateLimitSnapshot::default();
            let request = call.request;
            if !request.is_stream() {
                let body = serde_json::to_vec(&answer.completion(request))
                    .map_err(|e| ProviderError::Protocol { detail: e.to_string() })?;
                return Ok(ChatReply {
                    body: ReplyBody::Complete {
                        body: body.into(),
                        usage: Some(answer.usage()),
                    },
                    limits,
                    dropped: Vec::new(),
                });
            }
            let idle = self.timeouts.idle;
            let frames = self.sim.frames(&answer, request, true);
            let events = frames_to_events(frames, idle);
            Ok(ChatReply {
                body: ReplyBody::Stream(events),
                limits,
                dropped: Vec::new(),
            })
        })
    }
}

fn frames_to_events(
    frames: impl futures_util::Stream<Item = SimFrame> + Send + 'static,
    idle: Duration,
) -> EventStream {
    let frames = Box::pin(frames);
    Box::pin(futures_util::stream::unfold(
        (frames, false),
        move |(mut frames, ended)| async move {
            if ended {
                return None;
            }
            let item = match tokio::time::timeout(idle, frames.next()).await {
                Err(_) => Err(ProviderError::Timeout {
                    phase: TimeoutPhase::Idle,
                    after: idle,
                }),
                Ok(None) => return None,
                Ok(Some(SimFrame::Chunk {
                    data,
                    usage,
                    usage_only,
                })) => Ok(StreamEvent {
                    data,
                    usage,
                    usage_only,
                    estimated: false,
                }),
                Ok(Some(SimFrame::Malformed)) => Err(ProviderError::Protocol {
                    detail: "simulated malformed event".to_owned(),
                }),
                Ok(Some(SimFrame::Reset)) => Err(ProviderError::Truncated {
                    detail: "simulated connection reset".to_owned(),
                }),
            };
            let ended = item.is_err();
            Some((item, (frames, ended)))
        },
    ))
}
