//! Cases: revision.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_revision {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args revision: [] }
    };
}
