//! Cases: ttl.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_ttl {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args ttl: [] }
    };
}
