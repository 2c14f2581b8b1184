//! Cases: close.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_close {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args close: [] }
    };
}
