//! Copy buffers lent only while data moves: an idle session holds none.
//!
//! A small per-thread free list avoids an allocator round trip per readable event; buffers of
//! another size (after a reload changed `buffer_size`) are simply dropped.

use std::cell::RefCell;

const KEEP_PER_THREAD: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// Borrows a buffer of `size` bytes.
pub fn take(size: usize) -> Box<[u8]> {
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        while let Some(b) = f.pop() {
            if b.len() == size {
                return b;
            }
        }
        vec![0u8; size].into_boxed_slice()
    })
}

/// Returns a buffer to this thread's free list.
pub fn give(buf: Box<[u8]>) {
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEEP_PER_THREAD {
            f.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn reuses_buffers_of_the_same_size() {
        let b = super::take(4096);
        let ptr = b.as_ptr();
        super::give(b);
        let again = super::take(4096);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(super::take(8192).len(), 8192);
    }
}
