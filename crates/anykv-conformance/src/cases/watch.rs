//! Cases: watch.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_watch {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args watch: [] }
    };
}
