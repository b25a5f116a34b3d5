//! Deterministic reply text: the same conversation always gets the same words.

const WORDS: [&str; 48] = [
    "the",
    "river",
    "carries",
    "light",
    "across",
    "a",
    "quiet",
    "valley",
    "where",
    "every",
    "stone",
    "remembers",
    "water",
    "and",
    "wind",
    "shape",
    "slow",
    "patient",
    "gates",
    "open",
    "when",
    "rain",
    "returns",
    "to",
    "fields",
    "of",
    "grain",
    "under",
    "morning",
    "sky",
    "so",
    "each",
    "channel",
    "finds",
    "its",
    "way",
    "home",
    "through",
    "reeds",
    "mills",
    "bridges",
    "old",
    "towns",
    "near",
    "sea",
    "long",
    "after",
    "dusk",
];

/// FNV-1a: a tiny stable hash, so replies do not change between builds or platforms.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `count` tokens of reply, each a word with its leading space, seeded by the text of the last turn and the
/// model. The first word is capitalised without a space.
pub(crate) fn reply(seed_text: &str, model: &str, count: usize) -> Vec<&'static str> {
    let mut state = fnv1a(seed_text.as_bytes()) ^ fnv1a(model.as_bytes()).rotate_left(17) | 1;
    let mut words = Vec::with_capacity(count);
    for i in 0..count {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = WORDS[(state % WORDS.len() as u64) as usize];
        words.push(if i == 0 { capitalised(word) } else { spaced(word) });
    }
    words
}

/// One word picked by `seed`, for generated tool arguments.
pub(crate) fn word(seed: u64) -> &'static str {
    WORDS[(seed % WORDS.len() as u64) as usize]
}

fn capitalised(word: &'static str) -> &'static str {
    CAPITALISED[WORDS.iter().position(|w| *w == word).unwrap_or(0)]
}

fn spaced(word: &'static str) -> &'static str {
    SPACED[WORDS.iter().position(|w| *w == word).unwrap_or(0)]
}

// Word forms kept static so a reply is a list of borrowed strings and costs no allocation per token.
const CAPITALISED: [&str; 48] = [
    "The",
    "River",
    "Carries",
    "Light",
    "Across",
    "A",
    "Quiet",
    "Valley",
    "Where",
    "Every",
    "Stone",
    "Remembers",
    "Water",
    "And",
    "Wind",
    "Shape",
    "Slow",
    "Patient",
    "Gates",
    "Open",
    "When",
    "Rain",
    "Returns",
    "To",
    "Fields",
    "Of",
    "Grain",
    "Under",
    "Morning",
    "Sky",
    "So",
    "Each",
    "Channel",
    "Finds",
    "Its",
    "Way",
    "Home",
    "Through",
    "Reeds",
    "Mills",
    "Bridges",
    "Old",
    "Towns",
    "Near",
    "Sea",
    "Long",
    "After",
    "Dusk",
];
const SPACED: [&str; 48] = [
    " the",
    " river",
    " carries",
    " light",
    " across",
    " a",
    " quiet",
    " valley",
    " where",
    " every",
    " stone",
    " remembers",
    " water",
    " and",
    " wind",
    " shape",
    " slow",
    " patient",
    " gates",
    " open",
    " when",
    " rain",
    " returns",
    " to",
    " fields",
    " of",
    " grain",
    " under",
    " morning",
    " sky",
    " so",
    " each",
    " channel",
    " finds",
    " its",
    " way",
    " home",
    " through",
    " reeds",
    " mills",
    " bridges",
    " old",
    " towns",
    " near",
    " sea",
    " long",
    " after",
    " dusk",
];
