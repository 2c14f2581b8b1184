//! Cases: atomic.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_atomic {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args atomic: [] }
    };
}
