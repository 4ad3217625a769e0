//! Network-byte-order integers.
//!
//! Stored as byte arrays, so they have alignment 1 and can overlay packet
//! bytes at any offset, and so a value in the wrong byte order cannot be
//! used as a number by mistake: `get()` and `new()` are the only ways across.

macro_rules! be_int {
    ($name:ident, $int:ty, $n:expr) => {
        #[doc = concat!("A `", stringify!($int), "` in network byte order.")]
        #[repr(transparent)]
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $n]);

        // SAFETY: a byte array, no padding, every bit pattern valid.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $name {}

        impl $name {
            /// From a host-order value.
            #[inline(always)]
            pub const fn new(v: $int) -> Self {
                Self(v.to_be_bytes())
            }

            /// The host-order value.
            #[inline(always)]
            pub const fn get(self) -> $int {
                <$int>::from_be_bytes(self.0)
            }
        }

        impl From<$int> for $name {
            fn from(v: $int) -> Self {
                Self::new(v)
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}", self.get())
            }
        }

        crate::assert_size!($name, $n);
    };
}

be_int!(Be16, u16, 2);
be_int!(Be32, u32, 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_network_order() {
        assert_eq!(Be16::new(0x0800).0, [0x08, 0x00]);
        assert_eq!(Be32::new(0x0a000001).0, [10, 0, 0, 1]);
        assert_eq!(Be32([192, 168, 1, 2]).get(), 0xc0a80102);
        assert_eq!(core::mem::align_of::<Be32>(), 1);
    }
}
