//! Japanese names with readings and the variant spellings that break hash-based linkage:
//! variant kanji (渡辺/渡邊/渡邉), half-width kana, hiragana, and the space between family and
//! given name written full-width, half-width or not at all. Every name here is common and none
//! is tied to a real person.

use rand::Rng;
use rand::seq::IndexedRandom;

/// Family names: (spellings, katakana reading). The first spelling is the common one.
pub const FAMILY_NAMES: &[(&[&str], &str)] = &[
    (&["佐藤"], "サトウ"),
    (&["鈴木"], "スズキ"),
    (&["高橋", "髙橋"], "タカハシ"),
    (&["田中"], "タナカ"),
    (&["伊藤"], "イトウ"),
    (&["渡辺", "渡邊", "渡邉"], "ワタナベ"),
    (&["山本"], "ヤマモト"),
    (&["中村"], "ナカムラ"),
    (&["小林"], "コバヤシ"),
    (&["加藤"], "カトウ"),
    (&["吉田"], "ヨシダ"),
    (&["山田"], "ヤマダ"),
    (&["佐々木"], "ササキ"),
    (&["山口"], "ヤマグチ"),
    (&["松本"], "マツモト"),
    (&["井上"], "イノウエ"),
    (&["木村"], "キムラ"),
    (&["斉藤", "齋藤", "齊藤"], "サイトウ"),
    (&["山崎", "山﨑"], "ヤマザキ"),
    (&["清水"], "シミズ"),
    (&["森"], "モリ"),
    (&["池田"], "イケダ"),
    (&["橋本"], "ハシモト"),
    (&["阿部"], "アベ"),
    (&["石川"], "イシカワ"),
];

/// Given names for men: (kanji, katakana reading).
pub const MALE_NAMES: &[(&str, &str)] = &[
    ("太郎", "タロウ"),
    ("健一", "ケンイチ"),
    ("大輔", "ダイスケ"),
    ("翔太", "ショウタ"),
    ("拓也", "タクヤ"),
    ("誠", "マコト"),
    ("浩二", "コウジ"),
    ("蓮", "レン"),
    ("悠真", "ユウマ"),
    ("陽翔", "ハルト"),
    ("隆", "タカシ"),
    ("茂", "シゲル"),
];

/// Given names for women: (kanji, katakana reading).
pub const FEMALE_NAMES: &[(&str, &str)] = &[
    ("花子", "ハナコ"),
    ("陽子", "ヨウコ"),
    ("美咲", "ミサキ"),
    ("由美", "ユミ"),
    ("愛", "アイ"),
    ("恵子", "ケイコ"),
    ("さくら", "サクラ"),
    ("結衣", "ユイ"),
    ("陽菜", "ヒナ"),
    ("和子", "カズコ"),
    ("明美", "アケミ"),
    ("葵", "アオイ"),
];

/// A name as one record system wrote it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordedName {
    /// Kanji name, family and given, with whatever space the system used.
    pub kanji: String,
    /// Reading, in whatever kana the system used.
    pub kana: String,
}

/// Half-width katakana for a full-width katakana string (voiced marks split off, as the
/// qualification system writes them).
pub fn half_width_katakana(text: &str) -> String {
    const PLAIN: &str = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンァィゥェォャュョッー";
    const HALF: &str = "ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜｦﾝｧｨｩｪｫｬｭｮｯｰ";
    const VOICED: &str = "ガギグゲゴザジズゼゾダヂヅデドバビブベボ";
    const VOICED_BASE: &str = "カキクケコサシスセソタチツテトハヒフヘホ";
    const SEMI: &str = "パピプペポ";
    const SEMI_BASE: &str = "ハヒフヘホ";
    let half = |c: char| {
        PLAIN
            .chars()
            .position(|p| p == c)
            .and_then(|i| HALF.chars().nth(i))
    };
    let mut out = String::new();
    for c in text.chars() {
        if let Some(i) = VOICED.chars().position(|v| v == c) {
            let base = VOICED_BASE.chars().nth(i).and_then(half);
            out.extend(base);
            out.push('ﾞ');
        } else if let Some(i) = SEMI.chars().position(|v| v == c) {
            out.extend(SEMI_BASE.chars().nth(i).and_then(half));
            out.push('ﾟ');
        } else if c == '　' {
            out.push(' ');
        } else {
            out.push(half(c).unwrap_or(c));
        }
    }
    out
}

/// Hiragana for katakana.
pub fn hiragana(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'ァ'..='ヶ' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            other => other,
        })
        .collect()
}

/// Writes a person's name the way one record system might.
pub fn record_name(rng: &mut impl Rng, family: usize, given: (&str, &str)) -> RecordedName {
    let (spellings, family_kana) = FAMILY_NAMES[family % FAMILY_NAMES.len()];
    // Most systems use the common spelling; some keep the variant from the family register.
    let family_kanji = if rng.random_bool(0.7) {
        spellings[0]
    } else {
        spellings.choose(rng).copied().unwrap_or(spellings[0])
    };
    let space = *["　", " ", ""].choose(rng).unwrap_or(&"　");
    let kana_full = format!("{family_kana}　{}", given.1);
    let kana = match rng.random_range(0..3) {
        0 => half_width_katakana(&kana_full),
        1 => hiragana(&kana_full),
        _ => kana_full,
    };
    RecordedName {
        kanji: format!("{family_kanji}{space}{}", given.0),
        kana,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kana_forms() {
        assert_eq!(half_width_katakana("ワタナベ　ハナコ"), "ﾜﾀﾅﾍﾞ ﾊﾅｺ");
        assert_eq!(half_width_katakana("パン"), "ﾊﾟﾝ");
        assert_eq!(hiragana("ワタナベ"), "わたなべ");
    }
}
