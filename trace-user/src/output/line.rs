//! A serde serializer for sockbuf's JSON lines, byte for byte what `serde_json` writes, at
//! half its cost per event (`sockbuf replay`, BENCHMARKS.md).
//!
//! serde_json escapes every key of every object (keys are data to it) and reaches each
//! `#[serde(flatten)]` field through a map adapter; sockbuf's keys are field names fixed at
//! compile time, so here they are copied as they are. Values are escaped exactly as
//! serde_json does (control characters, `"` and `\`), by serde_json itself whenever a string
//! needs it. The event types keep their `#[derive(Serialize)]`: the schema stays in one
//! place, only the writer differs.

use std::fmt::{self, Display, Write as _};

use serde::{
    Serialize,
    ser::{self, Impossible},
};

/// Appends `v` as one compact JSON value to `buf`.
pub fn write<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) -> Result<(), Error> {
    v.serialize(&mut Ser { buf })
}

#[derive(Debug)]
pub struct Error(String);

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e)
    }
}

struct Ser<'a> {
    buf: &'a mut Vec<u8>,
}

/// Appends `b` to `buf`. Keys and values are mostly a few bytes long: for those, two
/// overlapping word copies instead of a call into libc's `memmove`, which was the replay's
/// largest single cost (a call per key and per value).
#[inline(always)]
fn put(buf: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n > 16 {
        buf.extend_from_slice(b);
        return;
    }
    buf.reserve(16);
    let len = buf.len();
    // SAFETY: `reserve` made room for 16 bytes after `len`; every read below is inside `b`
    // (`n` ≥ 8, ≥ 4 or ≥ 1 in its branch) and every write inside `len..len + n`.
    unsafe {
        let (src, dst) = (b.as_ptr(), buf.as_mut_ptr().add(len));
        if n >= 8 {
            let (head, tail) = (
                src.cast::<u64>().read_unaligned(),
                src.add(n - 8).cast::<u64>().read_unaligned(),
            );
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let (head, tail) = (
                src.cast::<u32>().read_unaligned(),
                src.add(n - 4).cast::<u32>().read_unaligned(),
            );
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        buf.set_len(len + n);
    }
}

/// A string serde_json would write without escapes.
fn plain(b: &[u8]) -> bool {
    b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\')
}

impl Ser<'_> {
    fn int(&mut self, v: impl itoa::Integer) {
        put(self.buf, itoa::Buffer::new().format(v).as_bytes());
    }

    fn string(&mut self, s: &str) {
        if plain(s.as_bytes()) {
            self.buf.reserve(s.len() + 2);
            self.buf.push(b'"');
            put(self.buf, s.as_bytes());
            self.buf.push(b'"');
        } else {
            serde_json::to_writer(&mut *self.buf, s).expect("writing to a Vec cannot fail");
        }
    }

    /// A key of an object: a field's name, written as it is (see the module's comment).
    fn key(&mut self, first: &mut bool, key: &'static str) {
        debug_assert!(plain(key.as_bytes()), "field name {key:?} needs escaping");
        if !std::mem::take(first) {
            self.buf.push(b',');
        }
        self.buf.reserve(key.len() + 3);
        self.buf.push(b'"');
        put(self.buf, key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    fn compound(&mut self, open: u8) -> Compound<'_> {
        self.buf.push(open);
        Compound {
            ser: Ser {
                buf: &mut *self.buf,
            },
            first: true,
        }
    }
}

/// An object or array being written; `first`: nothing written into it yet.
pub struct Compound<'a> {
    ser: Ser<'a>,
    first: bool,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        if !std::mem::take(&mut self.first) {
            self.ser.buf.push(b',');
        }
        v.serialize(&mut self.ser)
    }

    fn close(self, c: u8) -> Result<(), Error> {
        self.ser.buf.push(c);
        Ok(())
    }
}

/// The integer methods of `Serializer`, all written by itoa.
macro_rules! ints {
    ($($method:ident: $t:ty),*) => {
        $(
            fn $method(self, v: $t) -> Result<(), Error> {
                self.int(v);
                Ok(())
            }
        )*
    };
}

impl<'s> ser::Serializer for &'s mut Ser<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'s>;
    type SerializeTuple = Compound<'s>;
    type SerializeTupleStruct = Compound<'s>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Compound<'s>;
    type SerializeStruct = Compound<'s>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    ints!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64
    );
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        serde_json::to_writer(&mut *self.buf, &v).map_err(ser::Error::custom)
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        serde_json::to_writer(&mut *self.buf, &v).map_err(ser::Error::custom)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        ser::Serializer::collect_seq(self, v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.buf.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Error> {
        self.string(v);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        let mut obj = self.compound(b'{');
        obj.ser.key(&mut obj.first, variant);
        v.serialize(&mut obj.ser)?;
        obj.close(b'}')
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Ok(self.compound(b'['))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Ok(self.compound(b'['))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Ok(self.compound(b'['))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(ser::Error::custom(format!(
            "{name}: tuple variants unsupported"
        )))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Ok(self.compound(b'{'))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Ok(self.compound(b'{'))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(ser::Error::custom(format!(
            "{name}: struct variants unsupported"
        )))
    }

    /// Written in place (the default makes a `String` first): error, syscall and flag names.
    fn collect_str<T: Display + ?Sized>(self, v: &T) -> Result<(), Error> {
        let start = self.buf.len();
        self.buf.push(b'"');
        write!(Utf8Sink(self.buf), "{v}").map_err(ser::Error::custom)?;
        if plain(&self.buf[start + 1..]) {
            self.buf.push(b'"');
        } else {
            let raw = String::from_utf8(self.buf.split_off(start + 1)).expect("written as str");
            self.buf.truncate(start);
            self.string(&raw);
        }
        Ok(())
    }
}

/// `fmt::Write` into the byte buffer (what `write!` needs).
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put(self.0, s.as_bytes());
        Ok(())
    }
}

/// Arrays: sequences, tuples and tuple structs, whose traits differ only in their names.
macro_rules! array {
    ($trait:ident, $method:ident) => {
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                self.element(v)
            }
            fn end(self) -> Result<(), Error> {
                self.close(b']')
            }
        }
    };
}

array!(SerializeSeq, serialize_element);
array!(SerializeTuple, serialize_element);
array!(SerializeTupleStruct, serialize_field);

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.ser.key(&mut self.first, key);
        v.serialize(&mut self.ser)
    }
    fn end(self) -> Result<(), Error> {
        self.close(b'}')
    }
}

/// Maps arrive from `#[serde(flatten)]` (keys: field names) and from map-typed fields; a key
/// must come out as a JSON string.
impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.element(key)?;
        if self.ser.buf.last() != Some(&b'"') {
            return Err(ser::Error::custom("a JSON object's key must be a string"));
        }
        self.ser.buf.push(b':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        v.serialize(&mut self.ser)
    }
    fn end(self) -> Result<(), Error> {
        self.close(b'}')
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::IpAddr};

    use serde::Serialize;

    use super::write;

    #[derive(Serialize)]
    struct Inner {
        a: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        gone: Option<u8>,
        b: Option<i64>,
    }

    #[derive(Serialize)]
    struct Outer<'a> {
        kind: &'static str,
        comm: &'a str,
        #[serde(flatten)]
        inner: Inner,
        nested: Inner,
        ip: IpAddr,
        flags: Vec<&'static str>,
        ok: bool,
        f: f64,
        nan: f64,
        map: BTreeMap<String, u32>,
        #[serde(flatten)]
        none: Option<Inner>,
        min: i64,
        max: u64,
    }

    fn same(v: &impl Serialize) {
        let mut ours = Vec::new();
        write(&mut ours, v).unwrap();
        let theirs = serde_json::to_vec(v).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }

    #[test]
    fn writes_what_serde_json_writes() {
        for comm in ["sbwork", "", "a\"b\\c\n\u{1}é", "\u{7f}tab\there"] {
            same(&Outer {
                kind: "send",
                comm,
                inner: Inner {
                    a: 1,
                    gone: None,
                    b: Some(-5),
                },
                nested: Inner {
                    a: 65535,
                    gone: Some(3),
                    b: None,
                },
                ip: "::ffff:127.0.0.1".parse().unwrap(),
                flags: vec!["MSG_DONTWAIT", "MSG_MORE"],
                ok: true,
                f: 0.1,
                nan: f64::NAN,
                map: [(String::from("k\"ey"), 7), (String::from("x"), 0)].into(),
                none: None,
                min: i64::MIN,
                max: u64::MAX,
            });
        }
        same(&"4.5.6.7".parse::<IpAddr>().unwrap());
        same(&Vec::<u8>::new());
    }

    #[test]
    fn collected_strings_are_escaped_where_needed() {
        struct D(&'static str);
        impl Serialize for D {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self.0)
            }
        }
        same(&[D("EAGAIN"), D("quote\"d"), D("")]);
    }

    /// Every length `put`'s branches treat apart (0, 1–3, 4–7, 8–16, longer), numbers of
    /// every width, each appended after text already in the line.
    #[test]
    fn short_copies_of_every_length() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789";
        let strings: Vec<&str> = (0..=text.len()).map(|n| &text[..n]).collect();
        same(&strings);
        let numbers: Vec<u64> = (0..20)
            .map(|d| 10u64.pow(d) + 7)
            .chain([0, u64::MAX])
            .collect();
        same(&numbers);
        let mut map = BTreeMap::new();
        for n in 1..=text.len() {
            map.insert(&text[..n], n);
        }
        same(&map);
    }

    #[test]
    fn a_key_that_is_not_a_string_is_an_error() {
        let m: BTreeMap<u32, u32> = [(1, 2)].into();
        assert!(write(&mut Vec::new(), &m).is_err());
    }
}
