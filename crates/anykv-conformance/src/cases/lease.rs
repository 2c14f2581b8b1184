//! Cases: lease.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_lease {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args lease: [] }
    };
}
