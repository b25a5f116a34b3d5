//! Counting a stream's completion from its chunks, for when the vendor reports no usage or the stream
//! ends before its usage report (the client left, the connection broke).

/// Chunks kept unparsed before the tally starts counting as they pass. Most vendors report usage in the
/// last chunk, so most streams are never parsed for counting; a long stream costs at most this much memory
/// before its chunks are counted and let go.
const KEPT_CHUNK_BYTES: usize = 64 * 1024;

/// The kept buffer's first size: a short answer's chunks fit without growing it.
const KEPT_START_BYTES: usize = 4096;

/// Chunk ends the first reservation holds.
const KEPT_START_CHUNKS: usize = 32;

/// The completion of a stream, for when the vendor reports no usage. Short streams keep their chunks and
/// are counted only if needed; past [`KEPT_CHUNK_BYTES`] chunks are counted as they pass, so a stream of
/// any length holds a bounded amount of memory. The chunks are copied one after another into one buffer:
/// keeping each chunk's `Bytes` instead cost an allocation per chunk (the shared header of a reference
/// count), where copying a chunk costs less than that allocation.
pub(crate) struct CompletionTally {
    kept: Vec<u8>,
    /// Where each kept chunk ends in `kept`.
    ends: Vec<usize>,
    counting: Option<Counting>,
    encoding: sluice_tokens::Encoding,
}

/// A tally that counts as chunks pass.
struct Counting {
    counter: sluice_tokens::CompletionCounter,
    found: CountedCompletion,
}

impl CompletionTally {
    pub(crate) fn new(encoding: sluice_tokens::Encoding) -> Self {
        Self {
            kept: Vec::new(),
            ends: Vec::new(),
            counting: None,
            encoding,
        }
    }

    pub(crate) fn encoding(&self) -> sluice_tokens::Encoding {
        self.encoding
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty() && self.counting.is_none()
    }

    /// Takes one OpenAI-format chunk.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if let Some(counting) = &mut self.counting {
            counting.add(data);
            return;
        }
        if self.ends.is_empty() {
            // Room for a typical stream at once, rather than growing chunk by chunk.
            self.kept.reserve(KEPT_START_BYTES.max(data.len()));
            self.ends.reserve(KEPT_START_CHUNKS);
        }
        self.kept.extend_from_slice(data);
        self.ends.push(self.kept.len());
        if self.kept.len() > KEPT_CHUNK_BYTES {
            let mut counting = Counting::new(self.encoding);
            for chunk in self.chunks() {
                counting.add(chunk);
            }
            self.clear();
            self.counting = Some(counting);
        }
    }

    /// The kept chunks, in order.
    fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.kept[start..end])
    }

    /// A usage report arrived: nothing needs counting.
    pub(crate) fn clear(&mut self) {
        self.kept = Vec::new();
        self.ends = Vec::new();
        self.counting = None;
    }

    pub(crate) fn finish(mut self) -> CountedCompletion {
        let mut counting = self.counting.take().unwrap_or_else(|| Counting::new(self.encoding));
        for chunk in self.chunks() {
            counting.add(chunk);
        }
        counting.found.tokens = counting.counter.tokens();
        counting.found
    }
}

/// What counting a stream's text found.
pub(crate) struct CountedCompletion {
    pub(crate) tokens: u64,
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
}

impl Counting {
    fn new(encoding: sluice_tokens::Encoding) -> Self {
        Self {
            counter: sluice_tokens::CompletionCounter::new(encoding),
            found: CountedCompletion {
                tokens: 0,
                id: String::new(),
                model: String::new(),
                created: 0,
            },
        }
    }

    /// Counts one chunk's text and tool call arguments; the first chunk also gives the id, model and time
    /// the estimated usage chunk carries.
    fn add(&mut self, data: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Chunk<'a> {
            #[serde(default, borrow)]
            id: std::borrow::Cow<'a, str>,
            #[serde(default, borrow)]
            model: std::borrow::Cow<'a, str>,
            #[serde(default)]
            created: u64,
            #[serde(default, borrow)]
            choices: Vec<Choice<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Choice<'a> {
            #[serde(default, borrow)]
            delta: Option<Delta<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Delta<'a> {
            #[serde(default, borrow)]
            content: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            tool_calls: Option<Vec<serde_json::Value>>,
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            return;
        };
        let found = &mut self.found;
        if found.id.is_empty() {
            found.id = chunk.id.into_owned();
            found.model = chunk.model.into_owned();
            found.created = chunk.created;
        }
        for delta in chunk.choices.into_iter().filter_map(|c| c.delta) {
            if let Some(text) = delta.content {
                self.counter.push(&text);
            }
            for call in delta.tool_calls.iter().flatten() {
                if let Some(arguments) = call.pointer("/function/arguments").and_then(serde_json::Value::as_str) {
                    self.counter.push(arguments);
                }
            }
        }
    }
}

/// The completion tokens of a complete `chat.completion` body whose vendor reported no usage: every
/// choice's text and tool call arguments, counted with `encoding`. A body that does not parse counts 0.
pub(crate) fn estimate_complete(body: &[u8], encoding: sluice_tokens::Encoding) -> u64 {
    let Ok(response) = serde_json::from_slice::<sluice_api::ChatCompletionResponse>(body) else {
        return 0;
    };
    let mut counter = sluice_tokens::CompletionCounter::new(encoding);
    for choice in &response.choices {
        if let Some(text) = &choice.message.content {
            counter.push(text);
        }
        for call in choice.message.tool_calls.iter().flatten() {
            counter.push(&call.function.arguments);
        }
    }
    counter.tokens()
}
