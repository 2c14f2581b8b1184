//! Cases: isolation.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_isolation {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args isolation: [] }
    };
}
