//! Mobile country codes (ITU-T E.212) to ISO 3166-1 alpha-2 countries, shipped in code.
//!
//! The table follows the ITU's "List of Mobile Country or Geographical Area Codes" (the annex to
//! the ITU Operational Bulletin), cross-checked against the country tags of the
//! mobile-broadband-provider-info database. A few codes are not one country:
//! - shared by several territories (340 for the French West Indies, 362 for the former Netherlands
//!   Antilles, 647 for the French departments in the Indian Ocean): [`Area::Shared`], reported as
//!   the candidates joined with `/`, because the MNC alone does not say which island;
//! - not geographic at all (901, 902 and 991 for international networks such as satellites and
//!   in-flight or maritime cells, 001 for test networks, 999 for private networks):
//!   [`Area::NonGeographic`], reported with no country. They are still not the home country.
//!
//! Lookups are pure and total: any string gets an answer, an unknown or malformed code gets
//! [`Area::Unknown`].

/// What a mobile country code designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// One country or territory (ISO 3166-1 alpha-2, upper case; `XK` for Kosovo).
    Country(&'static str),
    /// A code shared by several territories; the MCC alone cannot tell which.
    Shared(&'static [&'static str]),
    /// International, test or private networks: no country.
    NonGeographic(&'static str),
    /// Not a well-formed code, or one the ITU has not assigned.
    Unknown,
}

impl Area {
    /// The country as reported in `roaming.modems[].country`: the ISO code, the candidates of a
    /// shared code joined with `/` (e.g. `CW/SX/BQ`), or empty.
    pub fn country(&self) -> String {
        match self {
            Area::Country(c) => (*c).to_string(),
            Area::Shared(list) => list.join("/"),
            Area::NonGeographic(_) | Area::Unknown => String::new(),
        }
    }
}

/// True when `mcc` has the shape of a mobile country code: exactly three ASCII digits.
pub fn is_mcc(mcc: &str) -> bool {
    mcc.len() == 3 && mcc.bytes().all(|b| b.is_ascii_digit())
}

/// Looks up a three-digit mobile country code.
pub fn lookup(mcc: &str) -> Area {
    if !is_mcc(mcc) {
        return Area::Unknown;
    }
    let Ok(code) = mcc.parse::<u16>() else {
        return Area::Unknown;
    };
    match TABLE.binary_search_by_key(&code, |e| e.0) {
        Ok(i) => match TABLE.get(i) {
            Some((_, Kind::One(c), _)) => Area::Country(c),
            Some((_, Kind::Several(list), _)) => Area::Shared(list),
            Some((_, Kind::NoCountry, name)) => Area::NonGeographic(name),
            None => Area::Unknown,
        },
        Err(_) => Area::Unknown,
    }
}

/// The ITU's name for the area of a code, for messages; empty when unknown.
pub fn name(mcc: &str) -> &'static str {
    let Some(code) = is_mcc(mcc).then(|| mcc.parse::<u16>().ok()).flatten() else {
        return "";
    };
    TABLE
        .binary_search_by_key(&code, |e| e.0)
        .ok()
        .and_then(|i| TABLE.get(i))
        .map(|e| e.2)
        .unwrap_or("")
}

enum Kind {
    One(&'static str),
    Several(&'static [&'static str]),
    NoCountry,
}

use Kind::{NoCountry, One, Several};

/// Sorted by code (a test checks it), so lookups can binary-search.
#[rustfmt::skip]
static TABLE: &[(u16, Kind, &str)] = &[
    (1, NoCountry, "Test networks"),
    (202, One("GR"), "Greece"),
    (204, One("NL"), "Netherlands"),
    (206, One("BE"), "Belgium"),
    (208, One("FR"), "France"),
    (212, One("MC"), "Monaco"),
    (213, One("AD"), "Andorra"),
    (214, One("ES"), "Spain"),
    (216, One("HU"), "Hungary"),
    (218, One("BA"), "Bosnia and Herzegovina"),
    (219, One("HR"), "Croatia"),
    (220, One("RS"), "Serbia"),
    (221, One("XK"), "Kosovo"),
    (222, One("IT"), "Italy"),
    (225, One("VA"), "Vatican City State"),
    (226, One("RO"), "Romania"),
    (228, One("CH"), "Switzerland"),
    (230, One("CZ"), "Czechia"),
    (231, One("SK"), "Slovakia"),
    (232, One("AT"), "Austria"),
    // The Crown Dependencies' networks (Guernsey, Jersey, Isle of Man) also use 234, but the ITU
    // assigns the code to the United Kingdom and their MNCs overlap; report the assignee.
    (234, One("GB"), "United Kingdom"),
    (235, One("GB"), "United Kingdom"),
    (238, One("DK"), "Denmark"),
    (240, One("SE"), "Sweden"),
    (242, One("NO"), "Norway"),
    (244, One("FI"), "Finland"),
    (246, One("LT"), "Lithuania"),
    (247, One("LV"), "Latvia"),
    (248, One("EE"), "Estonia"),
    (250, One("RU"), "Russian Federation"),
    (255, One("UA"), "Ukraine"),
    (257, One("BY"), "Belarus"),
    (259, One("MD"), "Moldova"),
    (260, One("PL"), "Poland"),
    (262, One("DE"), "Germany"),
    (266, One("GI"), "Gibraltar"),
    (268, One("PT"), "Portugal"),
    (270, One("LU"), "Luxembourg"),
    (272, One("IE"), "Ireland"),
    (274, One("IS"), "Iceland"),
    (276, One("AL"), "Albania"),
    (278, One("MT"), "Malta"),
    (280, One("CY"), "Cyprus"),
    (282, One("GE"), "Georgia"),
    (283, One("AM"), "Armenia"),
    (284, One("BG"), "Bulgaria"),
    (286, One("TR"), "Türkiye"),
    (288, One("FO"), "Faroe Islands"),
    // Used by networks in Abkhazia without an ITU assignment; ISO 3166 counts it as Georgia.
    (289, One("GE"), "Abkhazia (Georgia)"),
    (290, One("GL"), "Greenland"),
    (292, One("SM"), "San Marino"),
    (293, One("SI"), "Slovenia"),
    (294, One("MK"), "North Macedonia"),
    (295, One("LI"), "Liechtenstein"),
    (297, One("ME"), "Montenegro"),
    (302, One("CA"), "Canada"),
    (308, One("PM"), "Saint Pierre and Miquelon"),
    (310, One("US"), "United States"),
    (311, One("US"), "United States"),
    (312, One("US"), "United States"),
    (313, One("US"), "United States"),
    (314, One("US"), "United States"),
    (315, One("US"), "United States"),
    (316, One("US"), "United States"),
    (330, One("PR"), "Puerto Rico"),
    (332, One("VI"), "United States Virgin Islands"),
    (334, One("MX"), "Mexico"),
    (338, One("JM"), "Jamaica"),
    // French West Indies; French Guiana's networks use it too, though the ITU also lists 742.
    (340, Several(&["GP", "MQ", "BL", "MF", "GF"]), "French Departments and Territories in the West Indies"),
    (342, One("BB"), "Barbados"),
    (344, One("AG"), "Antigua and Barbuda"),
    (346, One("KY"), "Cayman Islands"),
    (348, One("VG"), "British Virgin Islands"),
    (350, One("BM"), "Bermuda"),
    (352, One("GD"), "Grenada"),
    (354, One("MS"), "Montserrat"),
    (356, One("KN"), "Saint Kitts and Nevis"),
    (358, One("LC"), "Saint Lucia"),
    (360, One("VC"), "Saint Vincent and the Grenadines"),
    (362, Several(&["CW", "SX", "BQ"]), "Curaçao, Sint Maarten, Bonaire, Sint Eustatius and Saba"),
    (363, One("AW"), "Aruba"),
    (364, One("BS"), "Bahamas"),
    (365, One("AI"), "Anguilla"),
    (366, One("DM"), "Dominica"),
    (368, One("CU"), "Cuba"),
    (370, One("DO"), "Dominican Republic"),
    (372, One("HT"), "Haiti"),
    (374, One("TT"), "Trinidad and Tobago"),
    (376, One("TC"), "Turks and Caicos Islands"),
    (400, One("AZ"), "Azerbaijan"),
    (401, One("KZ"), "Kazakhstan"),
    (402, One("BT"), "Bhutan"),
    (404, One("IN"), "India"),
    (405, One("IN"), "India"),
    (406, One("IN"), "India"),
    (410, One("PK"), "Pakistan"),
    (412, One("AF"), "Afghanistan"),
    (413, One("LK"), "Sri Lanka"),
    (414, One("MM"), "Myanmar"),
    (415, One("LB"), "Lebanon"),
    (416, One("JO"), "Jordan"),
    (417, One("SY"), "Syrian Arab Republic"),
    (418, One("IQ"), "Iraq"),
    (419, One("KW"), "Kuwait"),
    (420, One("SA"), "Saudi Arabia"),
    (421, One("YE"), "Yemen"),
    (422, One("OM"), "Oman"),
    (423, One("PS"), "Palestine"),
    (424, One("AE"), "United Arab Emirates"),
    (425, One("IL"), "Israel"),
    (426, One("BH"), "Bahrain"),
    (427, One("QA"), "Qatar"),
    (428, One("MN"), "Mongolia"),
    (429, One("NP"), "Nepal"),
    (430, One("AE"), "United Arab Emirates (Abu Dhabi)"),
    (431, One("AE"), "United Arab Emirates (Dubai)"),
    (432, One("IR"), "Iran"),
    (434, One("UZ"), "Uzbekistan"),
    (436, One("TJ"), "Tajikistan"),
    (437, One("KG"), "Kyrgyzstan"),
    (438, One("TM"), "Turkmenistan"),
    (440, One("JP"), "Japan"),
    (441, One("JP"), "Japan"),
    (450, One("KR"), "Korea (Republic of)"),
    (452, One("VN"), "Viet Nam"),
    (454, One("HK"), "Hong Kong, China"),
    (455, One("MO"), "Macao, China"),
    (456, One("KH"), "Cambodia"),
    (457, One("LA"), "Lao People's Democratic Republic"),
    (460, One("CN"), "China"),
    (461, One("CN"), "China"),
    (466, One("TW"), "Taiwan, China"),
    (467, One("KP"), "Democratic People's Republic of Korea"),
    (470, One("BD"), "Bangladesh"),
    (472, One("MV"), "Maldives"),
    (502, One("MY"), "Malaysia"),
    (505, One("AU"), "Australia"),
    (510, One("ID"), "Indonesia"),
    (514, One("TL"), "Timor-Leste"),
    (515, One("PH"), "Philippines"),
    (520, One("TH"), "Thailand"),
    (525, One("SG"), "Singapore"),
    (528, One("BN"), "Brunei Darussalam"),
    (530, One("NZ"), "New Zealand"),
    (534, One("MP"), "Northern Mariana Islands"),
    (535, One("GU"), "Guam"),
    (536, One("NR"), "Nauru"),
    (537, One("PG"), "Papua New Guinea"),
    (539, One("TO"), "Tonga"),
    (540, One("SB"), "Solomon Islands"),
    (541, One("VU"), "Vanuatu"),
    (542, One("FJ"), "Fiji"),
    (543, One("WF"), "Wallis and Futuna"),
    (544, One("AS"), "American Samoa"),
    (545, One("KI"), "Kiribati"),
    (546, One("NC"), "New Caledonia"),
    (547, One("PF"), "French Polynesia"),
    (548, One("CK"), "Cook Islands"),
    (549, One("WS"), "Samoa"),
    (550, One("FM"), "Micronesia"),
    (551, One("MH"), "Marshall Islands"),
    (552, One("PW"), "Palau"),
    (553, One("TV"), "Tuvalu"),
    (554, One("TK"), "Tokelau"),
    (555, One("NU"), "Niue"),
    (602, One("EG"), "Egypt"),
    (603, One("DZ"), "Algeria"),
    (604, One("MA"), "Morocco"),
    (605, One("TN"), "Tunisia"),
    (606, One("LY"), "Libya"),
    (607, One("GM"), "Gambia"),
    (608, One("SN"), "Senegal"),
    (609, One("MR"), "Mauritania"),
    (610, One("ML"), "Mali"),
    (611, One("GN"), "Guinea"),
    (612, One("CI"), "Côte d'Ivoire"),
    (613, One("BF"), "Burkina Faso"),
    (614, One("NE"), "Niger"),
    (615, One("TG"), "Togo"),
    (616, One("BJ"), "Benin"),
    (617, One("MU"), "Mauritius"),
    (618, One("LR"), "Liberia"),
    (619, One("SL"), "Sierra Leone"),
    (620, One("GH"), "Ghana"),
    (621, One("NG"), "Nigeria"),
    (622, One("TD"), "Chad"),
    (623, One("CF"), "Central African Republic"),
    (624, One("CM"), "Cameroon"),
    (625, One("CV"), "Cabo Verde"),
    (626, One("ST"), "Sao Tome and Principe"),
    (627, One("GQ"), "Equatorial Guinea"),
    (628, One("GA"), "Gabon"),
    (629, One("CG"), "Congo"),
    (630, One("CD"), "Democratic Republic of the Congo"),
    (631, One("AO"), "Angola"),
    (632, One("GW"), "Guinea-Bissau"),
    (633, One("SC"), "Seychelles"),
    (634, One("SD"), "Sudan"),
    (635, One("RW"), "Rwanda"),
    (636, One("ET"), "Ethiopia"),
    (637, One("SO"), "Somalia"),
    (638, One("DJ"), "Djibouti"),
    (639, One("KE"), "Kenya"),
    (640, One("TZ"), "Tanzania"),
    (641, One("UG"), "Uganda"),
    (642, One("BI"), "Burundi"),
    (643, One("MZ"), "Mozambique"),
    (645, One("ZM"), "Zambia"),
    (646, One("MG"), "Madagascar"),
    (647, Several(&["RE", "YT"]), "French Departments and Territories in the Indian Ocean"),
    (648, One("ZW"), "Zimbabwe"),
    (649, One("NA"), "Namibia"),
    (650, One("MW"), "Malawi"),
    (651, One("LS"), "Lesotho"),
    (652, One("BW"), "Botswana"),
    (653, One("SZ"), "Eswatini"),
    (654, One("KM"), "Comoros"),
    (655, One("ZA"), "South Africa"),
    (657, One("ER"), "Eritrea"),
    (658, One("SH"), "Saint Helena, Ascension and Tristan da Cunha"),
    (659, One("SS"), "South Sudan"),
    (702, One("BZ"), "Belize"),
    (704, One("GT"), "Guatemala"),
    (706, One("SV"), "El Salvador"),
    (708, One("HN"), "Honduras"),
    (710, One("NI"), "Nicaragua"),
    (712, One("CR"), "Costa Rica"),
    (714, One("PA"), "Panama"),
    (716, One("PE"), "Peru"),
    (722, One("AR"), "Argentina"),
    (724, One("BR"), "Brazil"),
    (730, One("CL"), "Chile"),
    (732, One("CO"), "Colombia"),
    (734, One("VE"), "Venezuela"),
    (736, One("BO"), "Bolivia"),
    (738, One("GY"), "Guyana"),
    (740, One("EC"), "Ecuador"),
    (742, One("GF"), "French Guiana"),
    (744, One("PY"), "Paraguay"),
    (746, One("SR"), "Suriname"),
    (748, One("UY"), "Uruguay"),
    (750, One("FK"), "Falkland Islands (Malvinas)"),
    (901, NoCountry, "International mobile, shared code"),
    (902, NoCountry, "International mobile, shared code"),
    (991, NoCountry, "Trial of a proposed new international service, shared code"),
    (995, One("IO"), "British Indian Ocean Territory"),
    (999, NoCountry, "Private networks (internal use)"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_well_formed() {
        for pair in TABLE.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (code, kind, name) in TABLE {
            assert!(*code <= 999 && !name.is_empty());
            let codes: &[&str] = match kind {
                One(c) => std::slice::from_ref(c),
                Several(list) => {
                    assert!(list.len() > 1, "{code}: a shared code lists several");
                    list
                }
                NoCountry => &[],
            };
            for c in codes {
                assert!(
                    c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()),
                    "{code}: {c}"
                );
            }
        }
        // Every geographic area the ITU lists, not a handful.
        assert!(TABLE.len() > 230, "{}", TABLE.len());
    }

    #[test]
    fn lookups() {
        let cases: &[(&str, Area, &str)] = &[
            ("240", Area::Country("SE"), "SE"),
            ("242", Area::Country("NO"), "NO"),
            ("244", Area::Country("FI"), "FI"),
            ("238", Area::Country("DK"), "DK"),
            ("262", Area::Country("DE"), "DE"),
            ("310", Area::Country("US"), "US"),
            ("316", Area::Country("US"), "US"),
            ("505", Area::Country("AU"), "AU"),
            ("750", Area::Country("FK"), "FK"),
            ("362", Area::Shared(&["CW", "SX", "BQ"]), "CW/SX/BQ"),
            ("647", Area::Shared(&["RE", "YT"]), "RE/YT"),
            (
                "901",
                Area::NonGeographic("International mobile, shared code"),
                "",
            ),
            ("001", Area::NonGeographic("Test networks"), ""),
            ("000", Area::Unknown, ""),
            ("123", Area::Unknown, ""),
            ("24", Area::Unknown, ""),
            ("2400", Area::Unknown, ""),
            ("24a", Area::Unknown, ""),
            ("+40", Area::Unknown, ""),
            ("", Area::Unknown, ""),
            ("٢٤٠", Area::Unknown, ""),
        ];
        for (mcc, area, country) in cases {
            assert_eq!(lookup(mcc), *area, "{mcc}");
            assert_eq!(lookup(mcc).country(), *country, "{mcc}");
        }
        assert_eq!(name("242"), "Norway");
        assert_eq!(name("24x"), "");
        assert_eq!(name("777"), "");
    }

    #[test]
    fn every_three_digit_string_gets_an_answer() {
        for n in 0..1000u16 {
            let mcc = format!("{n:03}");
            let area = lookup(&mcc);
            assert_eq!(
                matches!(area, Area::Unknown),
                TABLE.binary_search_by_key(&n, |e| e.0).is_err(),
                "{mcc}"
            );
        }
    }
}
