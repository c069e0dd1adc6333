//! The client's verdict classifier (`setup::wire::classify`), fed whatever the TCP peer sent
//! first: never panics; a complete verdict needs our nonce and round-trips; a prefix of a
//! real verdict is `Partial`, anything that diverges from one is `NotAVerdict`.
#![no_main]

use xway_tokio::fuzzing::{classify, encode_verdict, Classified, VERDICT_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&data[..16]);
    let peeked = &data[16..];
    let got = classify(peeked, &nonce);
    if matches!(got, Classified::Accept | Classified::Decline) {
        assert_eq!(&peeked[..8], b"XWAYVRD1");
        assert_eq!(&peeked[8..24], &nonce);
    }
    // A genuine verdict, cut anywhere, is recognised as such.
    let accept = peeked[0] & 1 == 0;
    let reason = u32::from(peeked[0] >> 1);
    let real = encode_verdict(accept, reason, &nonce);
    let cut = 1 + usize::from(peeked[0]) % VERDICT_LEN;
    let want = if cut < VERDICT_LEN {
        Classified::Partial
    } else if accept {
        Classified::Accept
    } else {
        Classified::Decline
    };
    assert_eq!(classify(&real[..cut], &nonce), want);
    // A real verdict followed by application bytes is still that verdict.
    let mut longer = real.to_vec();
    longer.extend_from_slice(peeked);
    assert_eq!(
        classify(&longer, &nonce),
        if accept {
            Classified::Accept
        } else {
            Classified::Decline
        }
    );
});
