//! Byte-level pieces for the hand-written fake servers of the tests: one
//! protocol message as a real server frames it. Only builders of bytes:
//! they never open a socket or start a process.

/// One MySQL packet: a 3-byte little-endian length, the sequence number,
/// then the payload.
pub fn mysql_packet(sequence: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(sequence);
    out.extend_from_slice(payload);
    out
}
