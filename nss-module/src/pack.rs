//! Writes answers into the caller's `struct passwd`/`struct group` and buffer. The total size
//! is checked before the first byte is written; the member pointer array is aligned to the
//! pointer size; strings come from the protocol crate, which refuses NUL inside them.

use std::os::raw::c_char;

use toolforge_nss_protocol::warm::{GroupBody, Members};
use toolforge_nss_protocol::PasswdRef;

/// The buffer is too small (or NULL): the caller answers TRYAGAIN/ERANGE.
#[derive(Debug, PartialEq, Eq)]
pub struct TooSmall;

/// A cursor over the caller's buffer.
struct Buf {
    base: *mut c_char,
    len: usize,
    used: usize,
}

impl Buf {
    /// Copies `s` and a NUL; the caller checked the total size first.
    unsafe fn put_str(&mut self, s: &[u8]) -> *mut c_char {
        debug_assert!(self.used + s.len() < self.len);
        let dst = self.base.add(self.used);
        std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), dst, s.len());
        *dst.add(s.len()) = 0;
        self.used += s.len() + 1;
        dst
    }
}

/// Fills `pwd` from `p` using `buf[..buflen]`.
///
/// # Safety
/// `pwd` must be valid for writes and `buf` valid for `buflen` bytes (or NULL).
pub unsafe fn passwd(
    p: &PasswdRef,
    pwd: *mut libc::passwd,
    buf: *mut c_char,
    buflen: usize,
) -> Result<(), TooSmall> {
    if buf.is_null() || pwd.is_null() || p.strings_len() > buflen {
        return Err(TooSmall);
    }
    let mut b = Buf {
        base: buf,
        len: buflen,
        used: 0,
    };
    let pw = &mut *pwd;
    pw.pw_name = b.put_str(p.name);
    pw.pw_passwd = b.put_str(p.passwd);
    pw.pw_uid = p.uid;
    pw.pw_gid = p.gid;
    pw.pw_gecos = b.put_str(p.gecos);
    pw.pw_dir = b.put_str(p.dir);
    pw.pw_shell = b.put_str(p.shell);
    Ok(())
}

/// The parts of a group, from a borrowed view or an owned entry.
pub struct GroupParts<'a, I: Iterator<Item = &'a [u8]>> {
    pub name: &'a [u8],
    pub passwd: &'a [u8],
    pub gid: u32,
    pub member_count: usize,
    /// Sum of member name lengths, without NULs.
    pub member_bytes: usize,
    pub members: I,
}

/// What [`group`] writes for a group decoded from the cache file.
pub fn warm_group_parts<'a>(g: &GroupBody<'a>) -> GroupParts<'a, Members<'a>> {
    GroupParts {
        name: g.name,
        passwd: g.passwd,
        gid: g.gid,
        member_count: g.member_count(),
        member_bytes: g.member_bytes(),
        members: g.members(),
    }
}

/// Fills `grp` using `buf[..buflen]`: the aligned, NULL-terminated member pointer array first,
/// then the strings.
///
/// # Safety
/// `grp` must be valid for writes and `buf` valid for `buflen` bytes (or NULL).
pub unsafe fn group<'a, I: Iterator<Item = &'a [u8]>>(
    g: GroupParts<'a, I>,
    grp: *mut libc::group,
    buf: *mut c_char,
    buflen: usize,
) -> Result<(), TooSmall> {
    if buf.is_null() || grp.is_null() {
        return Err(TooSmall);
    }
    let ptr_size = std::mem::size_of::<*mut c_char>();
    let pad = (ptr_size - (buf as usize) % ptr_size) % ptr_size;
    let array = g
        .member_count
        .checked_add(1)
        .and_then(|n| n.checked_mul(ptr_size))
        .ok_or(TooSmall)?;
    let strings = g.name.len() + 1 + g.passwd.len() + 1 + g.member_bytes + g.member_count;
    let need = pad
        .checked_add(array)
        .and_then(|n| n.checked_add(strings))
        .ok_or(TooSmall)?;
    if need > buflen {
        return Err(TooSmall);
    }
    let mem = buf.add(pad).cast::<*mut c_char>();
    let mut b = Buf {
        base: buf,
        len: buflen,
        used: pad + array,
    };
    let gr = &mut *grp;
    gr.gr_name = b.put_str(g.name);
    gr.gr_passwd = b.put_str(g.passwd);
    gr.gr_gid = g.gid;
    let mut i = 0;
    for m in g.members.take(g.member_count) {
        // The size check used member_bytes; a view whose members disagree is refused.
        if b.used + m.len() >= b.len {
            return Err(TooSmall);
        }
        *mem.add(i) = b.put_str(m);
        i += 1;
    }
    *mem.add(i) = std::ptr::null_mut();
    gr.gr_mem = mem;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn alice() -> PasswdRef<'static> {
        PasswdRef {
            name: b"alice",
            passwd: b"x",
            uid: 1001,
            gid: 500,
            gecos: b"Alice",
            dir: b"/home/alice",
            shell: b"/bin/bash",
        }
    }

    #[test]
    fn packs_passwd_exactly_and_refuses_one_byte_less() {
        let p = alice();
        let need = p.strings_len();
        let mut buf = vec![0 as c_char; need];
        // SAFETY: zeroed passwd is a valid out-parameter.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        unsafe {
            assert_eq!(
                passwd(&p, &mut pw, buf.as_mut_ptr(), need - 1),
                Err(TooSmall)
            );
            assert_eq!(passwd(&p, &mut pw, std::ptr::null_mut(), 0), Err(TooSmall));
            assert_eq!(passwd(&p, &mut pw, buf.as_mut_ptr(), need), Ok(()));
            assert_eq!(CStr::from_ptr(pw.pw_name).to_bytes(), b"alice");
            assert_eq!(CStr::from_ptr(pw.pw_shell).to_bytes(), b"/bin/bash");
            assert_eq!(CStr::from_ptr(pw.pw_dir).to_bytes(), b"/home/alice");
        }
        assert_eq!((pw.pw_uid, pw.pw_gid), (1001, 500));
    }

    #[test]
    fn packs_group_with_an_aligned_member_array_at_any_buffer_offset() {
        let members: [&[u8]; 3] = [b"a", b"bb", b"ccc"];
        for offset in 0..8 {
            let mut storage = vec![0 as c_char; 256];
            let buf = unsafe { storage.as_mut_ptr().add(offset) };
            let mut gr: libc::group = unsafe { std::mem::zeroed() };
            let parts = GroupParts {
                name: b"g",
                passwd: b"x",
                gid: 7,
                member_count: 3,
                member_bytes: 6,
                members: members.iter().copied(),
            };
            unsafe { group(parts, &mut gr, buf, 250 - offset) }.unwrap();
            assert_eq!(gr.gr_mem as usize % std::mem::size_of::<usize>(), 0);
            let got: Vec<&[u8]> = (0..3)
                .map(|i| unsafe { CStr::from_ptr(*gr.gr_mem.add(i)).to_bytes() })
                .collect();
            assert_eq!(got, members);
            assert!(unsafe { *gr.gr_mem.add(3) }.is_null());
        }
    }

    #[test]
    fn group_size_check_counts_padding_array_and_strings() {
        let members: [&[u8]; 2] = [b"ab", b"cd"];
        let mut storage = vec![0u64; 16]; // 8-byte aligned
        let buf = storage.as_mut_ptr().cast::<c_char>();
        let ptr = std::mem::size_of::<*mut c_char>();
        let exact = 3 * ptr + 2 + 2 + 3 + 3; // array of 3 + "g" "x" "ab" "cd"
        let parts = || GroupParts {
            name: b"g",
            passwd: b"x",
            gid: 1,
            member_count: 2,
            member_bytes: 4,
            members: members.iter().copied(),
        };
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { group(parts(), &mut gr, buf, exact - 1) },
            Err(TooSmall)
        );
        assert_eq!(unsafe { group(parts(), &mut gr, buf, exact) }, Ok(()));
        // One byte in: 7 bytes of padding are needed too.
        let unaligned = unsafe { buf.add(1) };
        assert_eq!(
            unsafe { group(parts(), &mut gr, unaligned, exact) },
            Err(TooSmall)
        );
        assert_eq!(
            unsafe { group(parts(), &mut gr, unaligned, exact + ptr - 1) },
            Ok(())
        );
    }
}
