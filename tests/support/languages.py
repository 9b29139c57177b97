"""Pages of good text in many scripts and shapes, and the broken text layers that look like them.

``GOOD`` is what the text-quality gate must never drop: prose in Latin with diacritics, Cyrillic, Greek, Arabic,
Hebrew, Devanagari and CJK scripts, and the pages that are not prose at all — code listings, tables of numbers, a
book index, a bibliography, formulas. The prose was written for docpipe's tests (no text is copied from elsewhere).
``broken`` turns a good page into what real broken PDFs give pypdf: glyph numbers read as code points, a ToUnicode
map off by an offset, an OCR layer that read Cyrillic as look-alike Latin letters.
"""

from __future__ import annotations

GOOD = {
    "english": """The harbour office keeps a ledger of every ship that enters or leaves the port. Each entry records the
name of the vessel, its flag, the cargo it declares and the berth it was given. When the weather turns, the
harbour master reads the ledger again to see which ships are still at sea, and he sends the pilot boats out to
meet them at the mouth of the river. In the winter of that year there were more storms than anyone could
remember, and the ledger shows how the traffic thinned from week to week until only the ferries kept their
timetable. The keepers of the lighthouse wrote their own notes in the margin: the hours of fog, the state of
the lamp, and the names of the crews they saw pass close to the rocks.""",
    "german": """Die Übungsaufgaben zur Vorlesung werden jeweils am Donnerstag ausgegeben und in der folgenden Woche
besprochen. Für die Zulassung zur Klausur müssen mindestens die Hälfte der Punkte erreicht werden. Wir beginnen
mit topologischen Räumen: Eine Teilmenge heißt offen, wenn sie zu jedem ihrer Punkte eine Umgebung enthält, die
ganz in ihr liegt. Stetige Abbildungen sind genau diejenigen, unter denen Urbilder offener Mengen wieder offen
sind. Danach untersuchen wir Zusammenhang, Kompaktheit und die Trennungsaxiome, und schließlich die
Fundamentalgruppe, mit der man zeigen kann, dass der Kreis nicht zusammenziehbar ist. Größere Beispiele, etwa
Flächen und ihre Überlagerungen, folgen im zweiten Teil des Semesters.""",
    "french": """Le conseil municipal s'est réuni jeudi soir pour examiner le projet de rénovation de la bibliothèque.
Les élus ont d'abord entendu l'architecte, qui a présenté les plans et le calendrier des travaux : la salle de
lecture sera agrandie, l'accès aux personnes à mobilité réduite sera amélioré et une partie des collections
anciennes sera déplacée vers des réserves mieux protégées de l'humidité. Plusieurs habitants ont pris la parole
pour demander que la bibliothèque reste ouverte pendant le chantier, au moins quelques après-midi par semaine.
Le maire a répondu qu'une solution provisoire était à l'étude dans l'ancienne école du quartier.""",
    "spanish": """El informe anual de la cooperativa muestra que la cosecha de aceitunas fue algo menor que la del año
pasado, pero que el aceite obtenido tiene una calidad excepcional. Los socios aprobaron en la asamblea una
inversión para renovar la almazara y para instalar paneles solares en el tejado del almacén. También se decidió
crear un pequeño fondo de ayuda para las familias que perdieron parte de sus olivos durante la sequía. La
directora explicó que los precios de venta se mantendrán estables y que la cooperativa seguirá buscando nuevos
mercados en el norte de Europa, donde la demanda de productos ecológicos no deja de crecer.""",
    "polish": """Biblioteka miejska zaprasza wszystkich mieszkańców na cykl spotkań poświęconych historii naszego
regionu. Podczas pierwszego wieczoru będziemy rozmawiać o dawnych szlakach handlowych, które przecinały doliny
rzek, oraz o tym, jak zmieniały się wsie i miasteczka w ciągu ostatnich dwustu lat. Prelegenci przyniosą stare
mapy, fotografie i listy, które udało się odnaleźć w archiwach parafialnych. Wstęp jest bezpłatny, ale prosimy
o wcześniejsze zgłoszenie, ponieważ liczba miejsc w czytelni jest ograniczona. Zapraszamy również dzieci, dla
których przygotowano krótkie zajęcia z rysowania map.""",
    "czech": """Obecní úřad oznamuje, že v pondělí bude z technických důvodů přerušena dodávka vody v ulicích u
nádraží. Oprava potrubí potrvá podle odhadu pracovníků vodáren přibližně šest hodin. Pro obyvatele dotčených
domů bude před poštou přistavena cisterna s pitnou vodou. Žádáme občany, aby si vodu na vaření připravili
předem a aby během opravy neparkovali v blízkosti výkopu. Děkujeme za pochopení a omlouváme se za komplikace,
které mohou v souvislosti s opravou nastat.""",
    "turkish": """Belediye, şehir merkezindeki tarihi çarşının yenilenmesi için hazırlanan projeyi halka tanıttı.
Proje kapsamında dükkânların cepheleri eski fotoğraflara göre onarılacak, dar sokakların taş döşemeleri
yenilenecek ve çarşının girişine küçük bir ziyaretçi merkezi kurulacak. Esnaf temsilcileri, çalışmalar sırasında
dükkânların kapanmaması için işlerin bölüm bölüm yapılmasını istedi. Belediye başkanı, yenileme çalışmalarının
iki yıl içinde tamamlanacağını ve çarşının bundan sonra da şehrin en canlı yeri olmaya devam edeceğini söyledi.""",
    "vietnamese": """Hội đồng nhân dân xã vừa thông qua kế hoạch xây dựng một trường tiểu học mới ở thôn phía bắc.
Ngôi trường sẽ có tám phòng học, một thư viện nhỏ và một sân chơi rộng cho các em học sinh. Người dân trong
thôn đã góp đất và công sức để việc xây dựng được bắt đầu ngay sau mùa gặt. Các thầy cô giáo mong rằng từ năm
học tới, trẻ em sẽ không còn phải đi bộ gần một giờ mỗi ngày để đến trường ở trung tâm xã.""",
    "russian": """Городская библиотека приглашает читателей на встречу с авторами новой книги об истории нашего
края. Книга рассказывает о том, как строились первые фабрики на берегу реки, как менялась жизнь рабочих
посёлков и почему многие старые здания сохранились до наших дней. Авторы несколько лет работали в архивах,
собирали письма, фотографии и воспоминания жителей. На встрече они покажут редкие снимки и ответят на вопросы
гостей. Вход свободный, но количество мест в читальном зале ограничено, поэтому просим заранее сообщить о своём
участии по телефону или электронной почте. После встречи можно будет приобрести книгу с автографами авторов.""",
    "ukrainian": """Міська рада оголосила конкурс на найкращий проєкт облаштування парку біля річки. Учасники мають
запропонувати, де розмістити доріжки, майданчики для дітей, лавки та ліхтарі, а також як зберегти старі дерева.
Проєкти приймаються до кінця місяця, після чого їх оцінить журі, до якого увійдуть архітектори, екологи та
представники мешканців. Переможець отримає премію, а його ідеї стануть основою для робіт, які планують
розпочати наступної весни.""",
    "bulgarian": """Общината обяви, че през лятото ще бъде ремонтиран главният път към селата в планината. Работите
ще започнат в началото на юни и ще продължат около три месеца. През това време движението ще се осъществява
само в едната лента, а на най-тесните участъци ще бъдат поставени светофари. Жителите на селата ще могат да
ползват допълнителен автобус, който ще тръгва рано сутрин и ще се връща вечерта.""",
    "greek": """Το δημοτικό συμβούλιο ενέκρινε χθες το σχέδιο για την ανακαίνιση της παλιάς αγοράς στο κέντρο της
πόλης. Οι εργασίες θα ξεκινήσουν το φθινόπωρο και θα γίνουν σε στάδια, ώστε τα καταστήματα να μη χρειαστεί να
κλείσουν για μεγάλο διάστημα. Οι κάτοικοι ζήτησαν να διατηρηθούν τα παλιά πέτρινα πεζοδρόμια και να φυτευτούν
περισσότερα δέντρα στην πλατεία. Ο δήμαρχος δήλωσε ότι οι προτάσεις τους θα ληφθούν υπόψη στο τελικό σχέδιο.""",
    "arabic": """أعلنت البلدية عن افتتاح مكتبة عامة جديدة في وسط المدينة، تضم قاعة كبيرة للمطالعة وقسماً خاصاً
بكتب الأطفال ومختبراً صغيراً للحاسوب. وقال رئيس البلدية إن المكتبة ستكون مفتوحة كل يوم من الصباح حتى المساء،
وإن الدخول إليها مجاني لجميع السكان. كما ستنظم المكتبة ورشات للقراءة والكتابة خلال العطلة الصيفية، وندوات
شهرية يشارك فيها كتّاب وباحثون من مختلف أنحاء البلاد. حَبيبي habibi حَبيبي.""",
    "persian": """شهرداری اعلام کرد که کار ساخت پل تازه بر روی رودخانه از ماه آینده آغاز می‌شود. این پل دو
محله‌ی قدیمی شهر را به هم وصل می‌کند و رفت و آمد مردم را بسیار آسان‌تر خواهد کرد. به گفته‌ی مهندسان، ساخت پل
حدود یک سال طول می‌کشد و در این مدت یک پل موقت برای عابران پیاده ساخته خواهد شد.""",
    "hebrew": """עיריית העיר הודיעה כי בשבוע הבא ייפתח מחדש הגן הציבורי שליד התחנה המרכזית. במהלך השיפוץ נשתלו
עצים חדשים, הותקנו ספסלים ותאורה, ונבנה מגרש משחקים לילדים. ראש העיר אמר כי הגן יהיה פתוח לציבור בכל שעות
היום, וכי בקיץ יתקיימו בו הופעות מוזיקה בערבים.""",
    "hindi": """नगर पालिका ने घोषणा की है कि अगले महीने से शहर के पुराने बाज़ार में नई सड़क बनाने का काम शुरू होगा।
इस दौरान दुकानें खुली रहेंगी, लेकिन वाहनों को दूसरे रास्ते से जाना होगा। अधिकारियों ने कहा कि काम को तीन चरणों में
पूरा किया जाएगा ताकि व्यापारियों को कम से कम परेशानी हो। नागरिकों से अनुरोध है कि वे इस समय धैर्य रखें और
यातायात पुलिस के निर्देशों का पालन करें।""",
    "chinese-simplified": """市图书馆将于下个月举办一系列关于本地历史的讲座。第一场讲座介绍老城区的街道是如何形成的，
以及一百年来居民的生活发生了哪些变化。主讲人多年来在档案馆查阅资料，收集了大量的老照片、书信和地图。
讲座免费向公众开放，但由于阅览室的座位有限，请有兴趣的读者提前通过电话或网站报名。讲座结束后，
图书馆还将组织参观新整理的地方文献展览，欢迎大家带着孩子一起参加。""",
    "chinese-traditional": """市立圖書館將在下個月舉辦一系列關於本地歷史的講座。第一場講座介紹舊城區的街道是怎樣形成的，
以及一百年來居民的生活發生了哪些變化。主講人多年來在檔案館查閱資料，收集了大量的舊照片、書信和地圖。
講座免費向公眾開放，但由於閱覽室的座位有限，請有興趣的讀者提前報名。""",
    "japanese": """市立図書館では、来月から地域の歴史についての連続講座を開きます。第一回は、古い町並みがどのように
できたのか、そしてこの百年の間に人々の暮らしがどう変わったのかを紹介します。講師は長年にわたって
資料館で記録を調べ、古い写真や手紙、地図などを集めてきました。参加は無料ですが、席に限りがありますので、
電話またはウェブサイトで事前にお申し込みください。講座のあとには、新しく整理された郷土資料の展示も
ご覧いただけます。お子さま連れの方も歓迎します。""",
    "korean": """시립 도서관은 다음 달부터 지역 역사에 관한 연속 강좌를 엽니다. 첫 번째 강좌에서는 옛 시가지의 거리가
어떻게 만들어졌는지, 그리고 지난 백 년 동안 주민들의 생활이 어떻게 바뀌었는지를 소개합니다. 강사는 오랫동안
기록관에서 자료를 조사하고 오래된 사진과 편지, 지도를 모아 왔습니다. 참가는 무료이지만 자리가 한정되어
있으므로 전화나 누리집을 통해 미리 신청해 주시기 바랍니다.""",
    "python-listing": """def chunk_pages(pages: list[str], limit: int = 1000) -> list[tuple[int, int]]:
    spans, start, size = [], 0, 0
    for index, page in enumerate(pages):
        if size + len(page) > limit and index > start:
            spans.append((start, index))
            start, size = index, 0
        size += len(page)
    spans.append((start, len(pages)))
    return spans


class LedgerEntry(NamedTuple):
    vessel: str
    flag: str
    tonnage: float

    def to_json(self) -> dict[str, Any]:
        return {"vessel": self.vessel, "flag": self.flag, "tonnage": round(self.tonnage, 1)}


if __name__ == "__main__":
    print(json.dumps([e.to_json() for e in load("ledger.csv")], indent=2))""",
    "java-listing": """public final class HarbourLedger {
    private final Map<String, List<VesselEntry>> entriesByFlag = new HashMap<>();

    public void addEntry(VesselEntry entry) {
        entriesByFlag.computeIfAbsent(entry.getFlag(), k -> new ArrayList<>()).add(entry);
    }

    public Optional<VesselEntry> findByName(String vesselName) {
        return entriesByFlag.values().stream().flatMap(List::stream)
            .filter(e -> e.getName().equalsIgnoreCase(vesselName)).findFirst();
    }

    @Override
    public String toString() {
        return "HarbourLedger{entriesByFlag=" + entriesByFlag.size() + "}";
    }
}""",
    "sql-and-shell": """SELECT v.vessel_id, v.name, COUNT(*) AS calls, SUM(c.tonnage) AS total_tonnage
FROM vessels v JOIN port_calls c ON c.vessel_id = v.vessel_id
WHERE c.arrived_at >= DATE '2023-01-01' AND c.berth IN ('B1', 'B2', 'C7')
GROUP BY v.vessel_id, v.name HAVING COUNT(*) > 3 ORDER BY total_tonnage DESC;

$ aws s3 cp s3://ledger-exports/2023/q4.csv ./q4.csv --region eu-west-1
$ gzip -9 q4.csv && sha256sum q4.csv.gz
3f1c9a0d7e6b2f845c1e9d0a7b3e5f6a8c2d4e1f0b9a8c7d6e5f4a3b2c1d0e9f  q4.csv.gz""",
    "table-of-numbers": """Quarter Vessels Tonnage (t) Revenue (EUR) Change
Q1 2022 412 1,204,332.5 3,402,118.20 +2.1%
Q2 2022 455 1,310,907.0 3,711,902.75 +9.1%
Q3 2022 498 1,402,115.2 3,958,440.10 +6.6%
Q4 2022 431 1,251,004.8 3,530,221.95 -10.8%
Q1 2023 420 1,221,560.1 3,455,010.40 -2.1%
Q2 2023 471 1,356,770.9 3,840,332.05 +11.1%
Q3 2023 512 1,447,908.3 4,101,876.60 +6.8%
Q4 2023 446 1,290,118.7 3,652,904.35 -10.9%
Total 3,645 10,484,717.5 29,652,806.40
Table 4.2: Port calls per quarter, 2022-2023 (source: harbour ledger, unaudited)""",
    "book-index": """Abbildung, stetige 12, 45–47
Abschluss 23, 31
Atlas, differenzierbarer 88
Bahnzusammenhang 52, 61, 64
Basis einer Topologie 14
Brouwerscher Fixpunktsatz 101
CW-Komplex 94–97
Decktransformation 79
Diffeomorphismus 86
Euler-Charakteristik 98, 112
Fundamentalgruppe 66–72
Hausdorff-Raum 28, 35
Homöomorphismus 19
Homotopie 63
Kompaktheit 38–44
Mannigfaltigkeit 84–90
Quotiententopologie 25
Seifert-van-Kampen, Satz von 75
Überlagerung 77–83
Zusammenhang 47–51""",
    "bibliography": """[1] M. A. Armstrong. Basic Topology. Undergraduate Texts in Mathematics. Springer, 1983.
[2] G. E. Bredon. Topology and Geometry. Graduate Texts in Mathematics 139. Springer, 1993.
[3] T. tom Dieck. Algebraic Topology. EMS Textbooks in Mathematics. EMS, Zürich, 2008.
[4] A. Hatcher. Algebraic Topology. Cambridge University Press, 2002.
[5] K. Jänich. Topologie. 8. Auflage. Springer, Berlin, 2005.
[6] J. R. Munkres. Topology. 2nd ed. Prentice Hall, 2000.
[7] E. Ossa. Topologie. Vieweg+Teubner, Wiesbaden, 2009.
[8] B. v. Querenburg. Mengentheoretische Topologie. Springer, 2001.""",
    "formulas": """Satz 3.4. Sei f: X → Y stetig und K ⊂ X kompakt. Dann ist f(K) kompakt.
Beweis. Sei (U_i)_{i∈I} eine offene Überdeckung von f(K). Dann ist (f⁻¹(U_i))_{i∈I} eine offene Überdeckung
von K, und es gibt i₁, …, iₙ mit K ⊂ f⁻¹(U_{i₁}) ∪ … ∪ f⁻¹(U_{iₙ}). Also gilt f(K) ⊂ U_{i₁} ∪ … ∪ U_{iₙ}. □
Beispiel. Für γ(t) = (cos 2πt, sin 2πt) gilt ∫₀¹ |γ'(t)| dt = 2π, und κ(t) = 1 für alle t ∈ [0, 1].
Es sei Δ = ∂²/∂x² + ∂²/∂y² und u(x, y) = eˣ sin y; dann ist Δu = 0, also u harmonisch.""",
}


# Cyrillic letters and the Latin letters an OCR engine set up for English reads them as.
LOOK_ALIKE_OCR = str.maketrans({
    "а": "a", "б": "6", "в": "B", "г": "r", "д": "g", "е": "e", "ё": "e", "ж": "x", "з": "3", "и": "u", "й": "u",
    "к": "k", "л": "n", "м": "M", "н": "H", "о": "o", "п": "n", "р": "p", "с": "c", "т": "T", "у": "y", "ф": "cp",
    "х": "x", "ц": "u", "ч": "4", "ш": "w", "щ": "w", "ъ": "b", "ы": "bI", "ь": "b", "э": "3", "ю": "io", "я": "R",
    "А": "A", "Б": "6", "В": "B", "Г": "r", "Д": "A", "Е": "E", "Ж": "X", "З": "3", "И": "U", "К": "K", "Л": "N",
    "М": "M", "Н": "H", "О": "O", "П": "N", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ч": "4", "Ш": "W",
    "Э": "3", "Я": "R",
})
# Only the letters that look the same in both scripts, swapped one for the other: words mix the scripts.
LOOK_ALIKE_SWAP = str.maketrans("аеорсхуАВЕКМНОРСТХ", "aeopcxyABEKMHOPCTX")


def glyph_numbers(text: str, *, subset: bool) -> list[int]:
    """The glyph numbers a font would give ``text``'s characters: a subset font numbers them 3, 4, 5, … in order of
    first use (space is 3); a full CJK font spreads them over its ~20,000 glyphs."""
    if subset:
        order: dict[str, int] = {" ": 3}
        return [order.setdefault(c, len(order) + 3) for c in text]
    return [3 if c == " " else 100 + (ord(c) * 7919) % 19_000 for c in text]
