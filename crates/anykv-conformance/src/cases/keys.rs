//! Cases: keys.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_keys {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args keys: [] }
    };
}
