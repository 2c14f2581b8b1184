//! Cases: race.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_race {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args race: [] }
    };
}
