//! Cases: lock.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_lock {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args lock: [] }
    };
}
