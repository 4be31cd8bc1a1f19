//! Horizontal flip (`RandomHorizontalFlip`, PIL `transpose(FLIP_LEFT_RIGHT)`): exact.

/// Mirrors a packed RGB8 image of width `width` left-right, in place. Does nothing if the buffer
/// is not a whole number of rows.
pub fn hflip(img: &mut [u8], width: u32) {
    let row_len = 3 * width as usize;
    if row_len == 0 || img.len() % row_len != 0 {
        return;
    }
    for row in img.chunks_exact_mut(row_len) {
        let (mut i, mut j) = (0usize, row_len - 3);
        while i < j {
            for c in 0..3 {
                row.swap(i + c, j + c);
            }
            i += 3;
            j -= 3;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn flips_rows_and_is_an_involution() {
        let orig: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8).collect();
        let mut img = orig.clone();
        super::hflip(&mut img, 3);
        assert_eq!(&img[..9], &[6, 7, 8, 3, 4, 5, 0, 1, 2]);
        super::hflip(&mut img, 3);
        assert_eq!(img, orig);
    }
}
