//! The BTF a socket-local storage map needs (the kernel refuses one without BTF for its key
//! and value), written by hand like the floors' programs: a `.maps` entry `FLOOR_SK` of type
//! `BPF_MAP_TYPE_SK_STORAGE`, flags `BPF_F_NO_PREALLOC`, key `int`, value `u64`s (two, or
//! the bytes and a histogram's buckets for the floor that counts as `--summary` must).

/// BTF kinds (include/uapi/linux/btf.h).
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const VAR: u32 = 14;
const DATASEC: u32 = 15;

const BPF_MAP_TYPE_SK_STORAGE: u32 = 24;
const BPF_F_NO_PREALLOC: u32 = 1;

/// The map's name: its symbol in `.maps`, and what the loader finds it by.
pub const MAP: &str = "FLOOR_SK";
/// The map definition's size in `.maps`: four pointers.
pub const DEF_SIZE: u32 = 32;

#[derive(Default)]
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    fn name(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if self.strings.is_empty() {
            self.strings.push(0);
        }
        let at = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        at
    }

    fn words(&mut self, w: &[u32]) {
        for v in w {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A type: name, kind, `vlen`, size or type, then its kind's words; gives its id.
    fn add(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32, extra: &[u32]) -> u32 {
        let name = self.name(name);
        self.words(&[name, kind << 24 | vlen, size_or_type]);
        self.words(extra);
        self.next_id += 1;
        self.next_id
    }

    fn member(&mut self, name: &str, ty: u32, bit_offset: u32) -> [u32; 3] {
        [self.name(name), ty, bit_offset]
    }
}

/// The `.BTF` section's bytes, for a value of `words` `u64`s.
pub fn section(words: u32) -> Vec<u8> {
    let mut b = Builder::default();
    let int = b.add("int", INT, 0, 4, &[1 << 24 | 32]); // signed, 32 bits
    // `__uint(name, N)`: a pointer to an array of N ints.
    let number = |b: &mut Builder, n: u32| {
        let array = b.add("", ARRAY, 0, 0, &[int, int, n]);
        b.add("", PTR, 0, array, &[])
    };
    let kind = number(&mut b, BPF_MAP_TYPE_SK_STORAGE);
    let flags = number(&mut b, BPF_F_NO_PREALLOC);
    let key = b.add("", PTR, 0, int, &[]);
    let u64_ = b.add("unsigned long long", INT, 0, 8, &[64]);
    let words_ty = b.add("", ARRAY, 0, 0, &[u64_, int, words]);
    let counts_member = b.member("counts", words_ty, 0);
    let counts = b.add("floor_counts", STRUCT, 1, words * 8, &counts_member);
    let value = b.add("", PTR, 0, counts, &[]);
    let members = [
        b.member("type", kind, 0),
        b.member("map_flags", flags, 64),
        b.member("key", key, 128),
        b.member("value", value, 192),
    ]
    .concat();
    let def = b.add("", STRUCT, 4, DEF_SIZE, &members);
    let var = b.add(MAP, VAR, 0, def, &[1]); // global, allocated
    b.add(".maps", DATASEC, 1, DEF_SIZE, &[var, 0, DEF_SIZE]);

    let mut out = Vec::new();
    let hdr_len = 24u32;
    out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
    out.extend_from_slice(&[1, 0]); // version, flags
    for w in [
        hdr_len,
        0,
        b.types.len() as u32,
        b.types.len() as u32,
        b.strings.len() as u32,
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&b.types);
    out.extend_from_slice(&b.strings);
    out
}
